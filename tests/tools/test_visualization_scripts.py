"""The visualisation scripts end to end on tiny data: dataset annotations, Salience DETR's salience maps,
LP-DETR's relation weights and training curves; each writes a PNG that decodes."""

import json
import os

import pytest
import torch
from PIL import Image

from core.lazy import LazyConfig, instantiate
from data import DatasetCatalog
from data.mapper import read_image
from engine.checkpoint import DetectionCheckpointer
from scripts import plot_metrics, visualize_data, visualize_relation_weights, visualize_salience
from tests.tools.test_demo_script import SALIENCE_CONFIG, tiny_model_opts
from tests.tools.train_net_helpers import ROOT, register_tiny

LP_DETR_CONFIG = os.path.join(ROOT, "projects", "lp_detr", "configs", "lp_detr_r18_synthetic.py")


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis_data")
    train_name, val_name = register_tiny(str(root), "vis_tiny")
    return train_name, val_name, DatasetCatalog.get(val_name)


def _save_model(config, opts, directory) -> str:
    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), opts)
    model = instantiate(cfg.model)
    DetectionCheckpointer(model, str(directory), save_to_disk=True).save("model")
    return str(directory / "model.pth")


@pytest.fixture(scope="module")
def lp_detr_weights(tiny_data, tmp_path_factory):
    opts = tiny_model_opts(tiny_data[1])
    return _save_model(LP_DETR_CONFIG, opts, tmp_path_factory.mktemp("lp_weights")), opts


def test_visualize_data(tiny_data, tmp_path):
    train_name, _, _ = tiny_data
    path = visualize_data.main(["--dataset", train_name, "--output", str(tmp_path / "data.png"), "--num-images", "3"])
    width, height = _png_size(path)
    assert width > 2 * height  # three panels side by side
    with pytest.raises(KeyError):
        visualize_data.main(["--dataset", "no_such_dataset", "--output", str(tmp_path / "x.png")])


def test_visualize_salience(tiny_data, tmp_path):
    _, val_name, records = tiny_data
    opts = tiny_model_opts(val_name)
    weights = _save_model(SALIENCE_CONFIG, opts, tmp_path)
    image = records[0]["file_name"]
    pngs = visualize_salience.main(
        ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--input", image, "--output", str(tmp_path / "sal"),
         "--device", "cpu", *opts]
    )  # fmt: skip
    assert len(pngs) == 1
    width, height = _png_size(pngs[0])
    assert width > 3 * height  # detections + one panel per level (4 levels), side by side


def test_salience_maps_cover_the_original_image(tiny_data, tmp_path):
    _, val_name, records = tiny_data
    cfg = LazyConfig.apply_overrides(LazyConfig.load(SALIENCE_CONFIG), tiny_model_opts(val_name))
    model = instantiate(cfg.model).eval()
    inputs = instantiate(cfg.dataloader.test.mapper).inference_input(read_image(records[0]["file_name"]))
    maps, detections = visualize_salience.salience_maps(model, inputs)
    assert len(maps) == 4
    for level in maps:
        assert tuple(level.shape) == (inputs["height"], inputs["width"])
        assert float(level.min()) >= 0.0 and float(level.max()) <= 1.0
    assert len(detections["scores"]) == 20


def test_visualize_salience_rejects_a_model_without_salience(tiny_data, lp_detr_weights, tmp_path):
    weights, opts = lp_detr_weights
    image = tiny_data[2][0]["file_name"]
    with pytest.raises(ValueError, match="no salience"):
        visualize_salience.main(
            ["--config-file", LP_DETR_CONFIG, "--weights", weights, "--input", image, "--output", str(tmp_path),
             "--device", "cpu", *opts]
        )  # fmt: skip


def test_visualize_relation_weights_from_checkpoint_and_json(lp_detr_weights, tmp_path):
    weights, opts = lp_detr_weights
    path = visualize_relation_weights.main(
        ["--config-file", LP_DETR_CONFIG, "--weights", weights, "--output", str(tmp_path / "ckpt.png"), *opts]
    )
    assert min(_png_size(path)) > 100
    table = {"iteration": 7, "scopes": ["local", "medium", "global"], "unused_rows": [0],
             "lambda": [[0.33, 0.33, 0.33], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]}  # fmt: skip
    (tmp_path / "relation_weights.json").write_text(json.dumps(table))
    path = visualize_relation_weights.main(
        ["--json", str(tmp_path / "relation_weights.json"), "--output", str(tmp_path / "json.png")]
    )
    assert min(_png_size(path)) > 100
    (tmp_path / "bad.json").write_text(json.dumps({"iteration": 1}))
    with pytest.raises(ValueError, match="no 'lambda'"):
        visualize_relation_weights.main(["--json", str(tmp_path / "bad.json"), "--output", str(tmp_path / "x.png")])


def test_visualize_relation_weights_rejects_another_model(tiny_data, tmp_path):
    opts = tiny_model_opts(tiny_data[1])
    weights = _save_model(SALIENCE_CONFIG, opts, tmp_path)
    with pytest.raises(ValueError, match="no LP-DETR relation weights"):
        visualize_relation_weights.main(
            ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--output", str(tmp_path / "x.png"), *opts]
        )


def test_plot_metrics(tmp_path):
    rows = []
    for it in range(19, 200, 20):
        rows.append({"iteration": it, "total_loss": 10 - it / 50, "loss_class": 1.0, "loss_class_0": 1.1,
                     "loss_bbox": 0.5, "loss_bbox_dn": 0.4, "loss_salience": 0.2, "lr": 1e-4})  # fmt: skip
    rows.append({"iteration": 99, "bbox/AP": 10.0, "bbox/AP50": 20.0})  # an evaluation row at a train iteration
    rows.append({"iteration": 199, "bbox/AP": 15.0, "bbox/AP50": 30.0})
    metrics = tmp_path / "metrics.json"
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = plot_metrics.main(["--metrics", str(metrics), "--output", str(tmp_path / "curves.png")])
    assert min(_png_size(path)) > 300
    with pytest.raises(FileNotFoundError):
        plot_metrics.main(["--metrics", str(tmp_path / "none.json"), "--output", str(tmp_path / "x.png")])
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        plot_metrics.main(["--metrics", str(tmp_path / "empty.json"), "--output", str(tmp_path / "x.png")])
