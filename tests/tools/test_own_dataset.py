"""A user's own dataset, through the entry points a user runs: tools/train_net.py, demo.py and the analysis scripts.

The data differs from the built-in set on purpose (category ids 1-based, non-contiguous or starting at 0; colour
JPEG/PNG of other sizes; image ids not 1..N), and is registered both ways the README shows: with
``register_coco_instances(name, {}, json, images)`` in a config file, and with ``dataloader.datasets.*`` keys on
the command line.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import uuid

import pytest
import torch

from core.lazy import LazyConfig
from data import MetadataCatalog
from data.preflight import BadImagesError
from engine.defaults import default_argument_parser
from tests.tools.own_data_helpers import OracleDetector, make_own_data, own_data_opts
from tests.tools.script_helpers import LP_DETR_CONFIG, detections_by_image, max_overlap
from tests.tools.train_net_helpers import CONFIG as CENTERNET_CONFIG
from tests.tools.train_net_helpers import ROOT
from tools import train_net

ORACLE_CONFIG = """\
from data import register_coco_instances
from core.lazy import LazyCall as L
from core.lazy import get_config
from tests.tools.own_data_helpers import OracleDetector

register_coco_instances("{name}", {{}}, "{json_file}", "{image_root}")  # the README's way, metadata {{}}

dataloader = get_config("common/data/coco_detr.py").dataloader
dataloader.test.dataset.names = "{name}"
dataloader.test.num_workers = 0
dataloader.test.mapper.augmentation[0].short_edge_length = 128
model = L(OracleDetector)(json_file="{json_file}", num_classes=None)
train = get_config("common/train.py").train
train.device = "cpu"
"""


def _main(*argv: str):
    return train_net.main(default_argument_parser().parse_args(list(argv)))


@pytest.mark.parametrize("category_ids", [(1, 2, 3), (4, 17, 90), (0, 2), (7, 3, 5, 1)], ids=str)
def test_perfect_predictions_score_100_when_registered_the_readme_way(tmp_path, category_ids):
    """The evaluator gets the json's category mapping whatever the order in which train_net builds things."""
    data = make_own_data(str(tmp_path / "data"), category_ids, num_train=1, num_val=8)
    json_file, image_root = data["val"]
    config = tmp_path / "oracle.py"
    name = f"own_val_{uuid.uuid4().hex[:8]}"
    config.write_text(ORACLE_CONFIG.format(name=name, json_file=json_file, image_root=image_root))
    checkpoint = tmp_path / "oracle.pth"
    torch.save({"model": OracleDetector(json_file).state_dict()}, checkpoint)
    results = _main(
        "--eval-only",
        "--config-file",
        str(config),
        f"train.init_checkpoint={checkpoint}",
        f"train.output_dir={tmp_path / 'out'}",
    )["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)
    per_class = {k[len("AP-") :]: v for k, v in results.items() if k.startswith("AP-")}
    assert per_class == {f"c{c}": pytest.approx(100.0) for c in category_ids}
    saved = LazyConfig.load(str(tmp_path / "out" / "config.yaml"))
    assert saved.model.num_classes == len(category_ids)  # completed from the dataset before config.yaml


def test_evaluator_built_before_the_dataset_is_read(tmp_path):
    """detectron2's order of registration, evaluator construction and data loading, outside train_net."""
    from data import get_detection_dataset_dicts, register_coco_instances
    from evaluation import COCOEvaluator, inference_on_dataset

    data = make_own_data(str(tmp_path / "data"), (1, 2, 3), num_train=1, num_val=6)
    name = f"own_order_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, *data["val"])
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path))  # nothing read yet
    dicts = get_detection_dataset_dicts(name, filter_empty=False)
    oracle = OracleDetector(data["val"][0])
    results = inference_on_dataset(oracle, [[{"image_id": d["image_id"]}] for d in dicts], evaluator)["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    assert MetadataCatalog.get(name).thing_classes == ["c1", "c2", "c3"]
    with open(tmp_path / "coco_instances_results.json") as f:
        assert {r["category_id"] for r in json.load(f)} <= {1, 2, 3}


# ------------------------------------------------------------------------------------------ model.num_classes
@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    return make_own_data(str(tmp_path_factory.mktemp("own")), (4, 17, 90), num_train=8, num_val=4)


@pytest.mark.parametrize("num_classes", [4, 2])
def test_num_classes_that_disagrees_with_the_data_fails_before_training(own_data, tmp_path, num_classes, caplog):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"model.num_classes={num_classes}, but dataset 'custom_train' .* has 3"):
        _main("--config-file", CENTERNET_CONFIG, *own_data_opts(own_data, num_classes), f"train.output_dir={out}")
    assert not (out / "metrics.json").exists()  # not a single iteration ran


def test_null_num_classes_is_taken_from_the_data(own_data, tmp_path, caplog):
    out = tmp_path / "out"
    opts = [*own_data_opts(own_data), f"train.output_dir={out}", "train.max_iter=1", "lr_multiplier.warmup_iters=0"]
    opts += ["~dataloader.evaluator", "dataloader.train.num_workers=0"]
    with caplog.at_level(logging.INFO):
        _main("--config-file", CENTERNET_CONFIG, *opts)
    assert "model.num_classes = 3, from dataset 'custom_train'" in caplog.text
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.model.num_classes == 3
    assert saved.dataloader.train.dataset.names == "custom_train"
    assert saved.dataloader.datasets.test.json_file == os.path.abspath(own_data["val"][0])


def test_train_and_test_with_other_categories_is_an_error(tmp_path):
    a = make_own_data(str(tmp_path / "a"), (1, 2, 3), num_train=2, num_val=2)
    b = make_own_data(str(tmp_path / "b"), (1, 2), num_train=2, num_val=2)
    mixed = {"train": a["train"], "val": b["val"]}
    with pytest.raises(ValueError, match="have different classes"):
        _main("--config-file", CENTERNET_CONFIG, *own_data_opts(mixed), f"train.output_dir={tmp_path / 'out'}")


def test_dataset_keys_name_what_is_missing(own_data, tmp_path):
    json_file, _ = own_data["train"]
    with pytest.raises(ValueError, match=r"dataloader.datasets.train.image_root is not"):
        _main("--config-file", CENTERNET_CONFIG, f"dataloader.datasets.train.json_file={json_file}")
    with pytest.raises(FileNotFoundError, match=r"dataloader.datasets.test.json_file=.*nope.json: no such file"):
        _main(
            "--config-file",
            CENTERNET_CONFIG,
            f"dataloader.datasets.test.json_file={tmp_path / 'nope.json'}",
            f"dataloader.datasets.test.image_root={tmp_path}",
        )
    with pytest.raises(ValueError, match="'synthetic_val' is already a registered dataset"):
        _main(
            "--config-file", CENTERNET_CONFIG, *own_data_opts(own_data), "dataloader.datasets.test.name=synthetic_val"
        )


def test_own_data_keys_exist_in_every_project_config():
    """The own-data keys are part of the shared data config, so every model config can be pointed at files."""
    configs = sorted(glob.glob(os.path.join(ROOT, "projects", "*", "configs", "*.py")))
    assert len(configs) >= 10
    for config in configs:
        cfg = LazyConfig.load(config)
        assert set(cfg.dataloader.datasets) == {"train", "test"}, config
        assert cfg.dataloader.datasets.train.json_file is None, config


# ------------------------------------------------------------------------------- the README's flow, end to end
@pytest.fixture(scope="module")
def own_run(own_data, tmp_path_factory):
    """A short training run on the own data through config keys (CenterNetLite, small images)."""
    out = str(tmp_path_factory.mktemp("own_run"))
    _main("--config-file", CENTERNET_CONFIG, *_short_run_opts(own_data, out), "train.checkpointer.period=2")
    return out


def _short_run_opts(own_data, out: str) -> list[str]:
    """Six iterations of CenterNetLite on the own data at small sizes, evaluated at the end, written to ``out``."""
    return [
        *own_data_opts(own_data),
        f"train.output_dir={out}",
        "train.max_iter=6",
        "train.eval_period=0",
        "lr_multiplier.warmup_iters=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentation.1.short_edge_length=[128]",
        "dataloader.train.mapper.augmentation_with_crop=null",
        "dataloader.test.mapper.augmentation.0.short_edge_length=128",
    ]


def _final_eval(out: str) -> dict:
    with open(os.path.join(out, "metrics.json")) as f:
        return [r for r in map(json.loads, f) if "bbox/AP" in r][-1]


def test_training_on_own_data_writes_names_ids_and_curves(own_run):
    final = _final_eval(own_run)
    assert {"bbox/AP-c4", "bbox/AP-c17", "bbox/AP-c90"} <= set(final)
    with open(os.path.join(own_run, "coco_instances_results.json")) as f:
        assert {r["category_id"] for r in json.load(f)} <= {4, 17, 90}
    assert os.path.getsize(os.path.join(own_run, "training_curves.png")) > 10_000
    checkpoint = torch.load(os.path.join(own_run, "model_final.pth"), weights_only=False)
    assert checkpoint["metadata"] == {
        "thing_classes": ["c4", "c17", "c90"],
        "thing_dataset_id_to_contiguous_id": {4: 0, 17: 1, 90: 2},
    }


def test_eval_only_with_the_saved_config_reproduces_the_final_evaluation(own_run):
    config = os.path.join(own_run, "config.yaml")
    weights = os.path.join(own_run, "model_final.pth")
    results = _main("--eval-only", "--config-file", config, f"train.init_checkpoint={weights}")["bbox"]
    final = _final_eval(own_run)
    assert results["AP"] == pytest.approx(final["bbox/AP"], abs=1e-9)
    assert results["AP-c90"] == pytest.approx(final["bbox/AP-c90"], abs=1e-9)


@pytest.fixture(scope="module")
def ema_run(own_data, tmp_path_factory):
    """The own-data run of :func:`own_run`, with an EMA of the weights that the evaluation uses."""
    out = str(tmp_path_factory.mktemp("ema_run"))
    ema = ["train.model_ema.enabled=True", "train.model_ema.decay=0.5", "train.model_ema.warmup=0"]
    _main("--config-file", CENTERNET_CONFIG, *_short_run_opts(own_data, out), "train.checkpointer.period=100", *ema)
    return out


def test_inference_from_an_ema_run_uses_the_evaluated_ema_weights(ema_run, own_run):
    """What --eval-only, demo.py and the predictor load is what the run evaluated: its EMA weights."""
    from engine.predictor import build_model

    checkpoint = torch.load(os.path.join(ema_run, "model_final.pth"), weights_only=False)
    assert checkpoint["eval_weights"] == "ema"
    ema, raw = checkpoint["trainer"]["hooks"]["EMAHook"]["state"], checkpoint["model"]
    floats = [k for k, v in raw.items() if v.is_floating_point()]
    assert any(not torch.equal(ema[k], raw[k]) for k in floats)  # decay 0.5: the two differ
    config = LazyConfig.load(os.path.join(ema_run, "config.yaml"))
    model, _ = build_model(config, os.path.join(ema_run, "model_final.pth"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, ema[key]), key
    results = _main(
        "--eval-only",
        "--config-file",
        os.path.join(ema_run, "config.yaml"),
        f"train.init_checkpoint={os.path.join(ema_run, 'model_final.pth')}",
    )["bbox"]
    final = _final_eval(ema_run)
    for key in ("AP", "AP50", "AR100", "AP-c17"):
        assert results[key] == pytest.approx(final[f"bbox/{key}"], abs=1e-9), key
    # a run without EMA writes no marker: its raw weights are the evaluated ones
    assert "eval_weights" not in torch.load(os.path.join(own_run, "model_final.pth"), weights_only=False)


def test_an_ema_marker_without_ema_state_is_an_error(ema_run, tmp_path):
    from engine.checkpoint import CheckpointReadError
    from engine.predictor import build_model

    checkpoint = torch.load(os.path.join(ema_run, "model_final.pth"), weights_only=False)
    del checkpoint["trainer"]
    edited = tmp_path / "edited.pth"
    torch.save(checkpoint, edited)
    with pytest.raises(CheckpointReadError, match="holds no EMA state"):
        build_model(LazyConfig.load(os.path.join(ema_run, "config.yaml")), str(edited))


def test_eval_only_with_a_checkpoint_of_another_model_is_an_error(own_run, tmp_path):
    from tests.fixtures.centernet_lite import CenterNetLite

    other = tmp_path / "other.pth"
    torch.save(
        {"model": CenterNetLite(num_classes=3, width=8, feature_channels=16, head_channels=16).state_dict()}, other
    )
    config = os.path.join(own_run, "config.yaml")
    with pytest.raises(ValueError, match=r"does not fit the model CenterNetLite"):
        _main("--eval-only", "--config-file", config, f"train.init_checkpoint={other}", f"train.output_dir={tmp_path}")


def test_demo_and_scripts_on_the_run_name_the_classes(own_run, own_data, tmp_path):
    from scripts import analyze_detections, demo, visualize_data, visualize_detections

    config, weights = os.path.join(own_run, "config.yaml"), os.path.join(own_run, "model_final.pth")
    out = demo.main(
        ["--config-file", config, "--weights", weights, "--input", own_data["val"][1], "--output", str(tmp_path / "d"),
         "--score-threshold", "0", "--device", "cpu"]
    )  # fmt: skip
    with open(out["results"]) as f:
        results = json.load(f)
    assert results and {r["category_id"] for r in results} <= {4, 17, 90}
    assert {r["class_name"] for r in results} <= {"c4", "c17", "c90"}
    assert all(r["class_name"] == f"c{r['category_id']}" for r in results)
    png = visualize_detections.main(["--config-file", config, "--output", str(tmp_path / "det.png")])
    assert os.path.getsize(png) > 10_000
    analyze_detections.main(["--config-file", config, "--output", str(tmp_path / "analysis"), "--score", "0.01"])
    with open(tmp_path / "analysis" / "confusion_matrix.json") as f:
        assert json.load(f)["labels"] == ["c4", "c17", "c90", "background"]
    png = visualize_data.main(["--config-file", config, "--output", str(tmp_path / "data.png")])
    assert os.path.getsize(png) > 10_000


def test_predictor_takes_names_from_the_checkpoint_when_the_data_is_gone(own_run, tmp_path):
    """A trained model moved to another machine: the json of its config is not there."""
    from engine.predictor import DefaultPredictor

    config = LazyConfig.load(os.path.join(own_run, "config.yaml"))
    config.dataloader.datasets.test.json_file = str(tmp_path / "elsewhere.json")
    config.dataloader.datasets.test.name = f"moved_{uuid.uuid4().hex[:6]}"
    predictor = DefaultPredictor(config, os.path.join(own_run, "model_final.pth"), device="cpu")
    assert predictor.class_names == ["c4", "c17", "c90"]
    detections = predictor(torch.zeros(3, 50, 70, dtype=torch.uint8))
    assert detections.image_size == (50, 70)
    assert set(detections.category_ids) <= {4, 17, 90}


def test_resume_skips_an_unreadable_newest_checkpoint(own_run, tmp_path, caplog):
    """A checkpoint truncated by a full disk: --resume continues from the newest readable one."""
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(own_run, out)
    final = out / "model_final.pth"
    final.write_bytes(final.read_bytes()[:1000])
    opts = [f"train.output_dir={out}", "train.max_iter=8", "train.eval_period=0", "~dataloader.evaluator"]
    with caplog.at_level(logging.WARNING):
        _main("--resume", "--config-file", str(out / "config.yaml"), *opts)
    assert "model_final.pth" in caplog.text and "cannot read" in caplog.text
    assert "resuming from" in caplog.text and "model_0000005.pth" in caplog.text
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 7


def test_predictor_gives_the_same_detections_for_every_kind_of_image(own_run, own_data):
    import numpy as np
    from PIL import Image

    from engine.predictor import DefaultPredictor

    predictor = DefaultPredictor.from_config(
        os.path.join(own_run, "config.yaml"), os.path.join(own_run, "model_final.pth"), device="cpu"
    )
    path = sorted(glob.glob(os.path.join(own_data["val"][1], "*.jpg")))[0]
    reference = predictor(path)
    assert len(reference) > 0 and reference.class_names[0] == f"c{reference.category_ids[0]}"
    with Image.open(path) as pil:
        pil.load()
    rgb = np.asarray(pil.convert("RGB"))
    bgr = DefaultPredictor.from_config(
        os.path.join(own_run, "config.yaml"), os.path.join(own_run, "model_final.pth"), image_format="BGR"
    )
    for image, model in (
        (pil, predictor),
        (rgb, predictor),
        (torch.from_numpy(rgb.copy()).permute(2, 0, 1), predictor),
        (rgb.astype(np.float32) / 255, predictor),
        (rgb[..., ::-1], bgr),
    ):
        detections = model(image)
        torch.testing.assert_close(detections.boxes, reference.boxes)
        torch.testing.assert_close(detections.scores, reference.scores)
        assert detections.class_names == reference.class_names
    batch = predictor([path, rgb])
    torch.testing.assert_close(batch[1].scores, reference.scores, atol=1e-5, rtol=1e-4)
    coco = reference.above(0.0).to_coco(image_id=5)
    assert coco[0]["image_id"] == 5 and len(coco[0]["bbox"]) == 4
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predictor(np.zeros((4, 5, 2), dtype=np.uint8))


def test_warmup_longer_than_the_run_names_the_key(own_data, tmp_path):
    opts = [*own_data_opts(own_data), f"train.output_dir={tmp_path}", "train.max_iter=20"]
    with pytest.raises(ValueError, match=r"lr_multiplier.warmup_iters=50 must be smaller than the run's 20 iterations"):
        _main("--config-file", CENTERNET_CONFIG, *opts)


def test_bad_image_stops_the_run_before_training_and_the_readme_switch_skips_the_check(tmp_path):
    data = make_own_data(str(tmp_path / "data"), (2, 5), num_train=4, num_val=2)
    json_file, _ = data["train"]
    with open(json_file) as f:
        coco = json.load(f)
    coco["images"][0]["height"] += 1  # the json disagrees with the file
    with open(json_file, "w") as f:
        json.dump(coco, f)
    bad = coco["images"][0]["file_name"]
    out = tmp_path / "out"
    opts = [*own_data_opts(data), f"train.output_dir={out}", "train.max_iter=1", "lr_multiplier.warmup_iters=0"]
    opts += ["~dataloader.evaluator", "dataloader.train.num_workers=0", "dataloader.train.total_batch_size=4"]
    with pytest.raises(BadImagesError, match=rf"{bad}: json says") as error:
        _main("--config-file", CENTERNET_CONFIG, *opts)
    assert not (out / "metrics.json").exists()
    switch = "dataloader.train.dataset.check_images=False dataloader.test.dataset.check_images=False"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert switch in f.read()  # the README's words turn it off
    assert all(key in str(error.value) for key in switch.split())
    with pytest.raises(ValueError, match=r"its dataset dict says") as later:  # the mapper meets the file instead
        _main("--config-file", CENTERNET_CONFIG, *opts, *switch.split())
    assert not isinstance(later.value, BadImagesError)


def test_backbone_download_failure_says_how_to_do_without(monkeypatch):
    from urllib.error import URLError

    from modeling.backbones import ResNetBackbone

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"model.backbone.weights=null") as error:
        ResNetBackbone("resnet18", out_features=("layer4",), weights="https://example.org/r18.pth")
    assert "r18.pth" in str(error.value) and "local file" in str(error.value)


def test_duplicate_suppression_through_train_net_and_eval_only(own_data, tmp_path):
    """``model.nms_iou_threshold`` on LP-DETR's synthetic config, trained and evaluated on the own data by
    ``train_net.py``: no two kept detections of an image overlap above the threshold, and ``--eval-only`` of the
    checkpoint without suppression (the saved config with the key set to null) returns a superset of them."""
    out = str(tmp_path / "run")
    opts = [*_short_run_opts(own_data, out), "train.max_iter=2", "model.nms_iou_threshold=0.5"]
    _main("--config-file", LP_DETR_CONFIG, *opts)
    with open(os.path.join(out, "coco_instances_results.json")) as f:
        kept = json.load(f)
    assert kept and {r["category_id"] for r in kept} <= {4, 17, 90}
    by_image = detections_by_image(kept, "image_id")
    for detections in by_image.values():
        assert len(detections) < 100  # the config's num_detections: random boxes of 100 queries overlap
        assert max_overlap(detections) <= 0.5 + 1e-4
    weights = os.path.join(out, "model_final.pth")
    plain_out = str(tmp_path / "plain")
    config = os.path.join(out, "config.yaml")
    _main(
        "--eval-only", "--config-file", config, f"train.init_checkpoint={weights}",
        "model.nms_iou_threshold=null", f"train.output_dir={plain_out}",
    )  # fmt: skip
    with open(os.path.join(plain_out, "coco_instances_results.json")) as f:
        plain = json.load(f)
    assert len(plain) == 100 * len(by_image) > len(kept)

    def key(r):
        return r["image_id"], r["category_id"], round(r["score"], 4), tuple(round(v, 1) for v in r["bbox"])

    assert {key(r) for r in kept} <= {key(r) for r in plain}
