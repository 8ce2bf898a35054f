"""tools/train_net.py end to end on synthetic data: train + eval, resume, epochs, eval-only, DDP, bad overrides."""

import json
import logging
import os
import shutil
import uuid

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from data import get_detection_dataset_dicts
from engine.checkpoint import DetectionCheckpointer
from engine.defaults import default_argument_parser
from engine.launch import launch
from tests.modeling.triton import require_triton_on_cpu
from tests.tools.script_helpers import SALIENCE_CONFIG
from tests.tools.train_net_helpers import CONFIG, ddp_worker, register_tiny, tiny_opts
from tools import train_net


def _run(*argv: str):
    return train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG, *argv]))


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prefix = f"tiny_{uuid.uuid4().hex[:8]}"
    return str(root), prefix, register_tiny(str(root), prefix)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One short training run with evaluation at the end (the CI end-to-end check)."""
    out = str(tmp_path_factory.mktemp("e2e"))
    _run(*tiny_opts(out, tiny[2], max_iter=40, **{"train.eval_period": 20}))
    return out


def test_train_and_eval_end_to_end(trained):
    rows = _metrics(trained)
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 40
    # metrics.json holds medians over the last 20 iterations (like detectron2), so compare ends of the run
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    evals = [r for r in rows if "bbox/AP" in r]
    assert [r["iteration"] for r in evals] == [19, 40]  # periodic, then after training
    assert {"bbox/AP50", "bbox/APs", "bbox/AR100", "bbox/AP-spot"} <= set(evals[-1])
    for name in ("config.yaml", "log.txt", "model_final.pth", "model_best.pth", "coco_instances_results.json"):
        assert os.path.isfile(os.path.join(trained, name)), name
    with open(os.path.join(trained, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(trained))
    with open(os.path.join(trained, "coco_instances_results.json")) as f:
        detections = json.load(f)
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    assert {d["category_id"] for d in detections} <= {1, 3, 5, 7}  # the dataset's original ids


def test_saved_config_reloads_and_instantiates(trained):
    cfg = LazyConfig.load(os.path.join(trained, "config.yaml"))
    assert cfg.train.max_iter == 40
    assert cfg.optimizer.params.base_lr == cfg.optimizer.lr  # interpolation kept and resolvable
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(os.path.join(trained, "model_final.pth"))


def test_eval_only_reproduces_final_evaluation(trained, tiny):
    results = _run(
        "--eval-only",
        *tiny_opts(
            trained, tiny[2], max_iter=40, **{"train.init_checkpoint": os.path.join(trained, "model_final.pth")}
        ),
    )
    final = [r for r in _metrics(trained) if "bbox/AP" in r][-1]
    assert results["bbox"]["AP"] == pytest.approx(final["bbox/AP"], abs=1e-9)
    assert results["bbox"]["AP50"] == pytest.approx(final["bbox/AP50"], abs=1e-9)


def test_resume_continues_exactly_like_uninterrupted_run(tiny, tmp_path):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    opts = {"train.checkpointer.period": 3, "dataloader.train.num_workers": 2}
    _run(*tiny_opts(full, tiny[2], max_iter=6, **opts), "~dataloader.evaluator")
    # The run is interrupted after iteration 2: only its checkpoint survives.
    os.makedirs(resumed)
    shutil.copy(os.path.join(full, "model_0000002.pth"), resumed)
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    _run("--resume", *tiny_opts(resumed, tiny[2], max_iter=6, **opts), "~dataloader.evaluator")
    a = torch.load(os.path.join(full, "model_final.pth"), weights_only=False)
    b = torch.load(os.path.join(resumed, "model_final.pth"), weights_only=False)
    assert b["iteration"] == a["iteration"] == 5
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["trainer"]["hooks"]["LRScheduler"] == b["trainer"]["hooks"]["LRScheduler"]
    state_a, state_b = a["trainer"]["optimizer"]["state"], b["trainer"]["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for idx in state_a:
        for name, value in state_a[idx].items():
            assert torch.equal(value, state_b[idx][name]), (idx, name)


def test_schedule_in_epochs_is_converted_and_logged(tiny, tmp_path, caplog):
    out = str(tmp_path / "epochs")
    with caplog.at_level(logging.INFO):
        _run(*tiny_opts(out, tiny[2], max_iter=1000, **{"train.epochs": 2}), "~dataloader.evaluator")
    dataset_size = len(get_detection_dataset_dicts(tiny[2][0]))  # after dropping images without objects
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Schedule in epochs"))
    per_epoch = -(-dataset_size // 2)
    assert f"2 epochs x {per_epoch} iterations/epoch" in message
    assert [r["iteration"] for r in _metrics(out)][-1] == 2 * per_epoch - 1
    assert LazyConfig.load(os.path.join(out, "config.yaml")).train.max_iter == 1000  # config as given
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 2 * per_epoch - 1


def test_mistyped_override_is_an_error_naming_the_key(tiny, tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'train.max_iter'"):
        _run(*tiny_opts(str(tmp_path), tiny[2], max_iter=2), "train.max_itr=5")
    with pytest.raises(ValueError, match="train.max_iter"):
        _run(*tiny_opts(str(tmp_path), tiny[2], max_iter=2), "train.max_iter=five")


def test_ddp_two_processes_on_cpu(tiny, tmp_path):
    root, prefix, _ = tiny
    out, result_file = str(tmp_path / "ddp"), str(tmp_path / "result.pth")
    launch(ddp_worker, 2, dist_url="auto", args=(root, prefix, out, result_file))
    result = torch.load(result_file, weights_only=False)
    assert result["world_size"] == 2
    assert result["max_abs_diff"] == 0.0  # replicas identical after 4 synchronised steps
    n_params = len(result["params"])
    assert result["grads_seen"] == [n_params, n_params]
    # What rank 0 saved is the unwrapped model: it loads into a single-process model without warnings.
    cfg = LazyConfig.load(CONFIG)
    model = instantiate(cfg.model)
    checkpoint = DetectionCheckpointer(model)._load_file(os.path.join(out, "model_final.pth"))
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    incompatible = model.load_state_dict(checkpoint["model"], strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    for name, param in model.named_parameters():
        assert torch.equal(param, result["params"][name]), name
    assert checkpoint["iteration"] == 3


LAMBDA_CONFIG = """\
from core.lazy import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load(
    {config!r}, ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
recipe = dict(lr_factor_func=lambda name: 0.1 if name.startswith("backbone") else 1.0)  # as detrex recipes do
"""


def test_run_logs_its_config_as_python_and_saves_what_yaml_cannot_hold_as_a_pickle(tiny, tmp_path, caplog):
    config = tmp_path / "with_lambda.py"
    config.write_text(LAMBDA_CONFIG.format(config=CONFIG))
    out = str(tmp_path / "out")
    with caplog.at_level(logging.INFO):
        train_net.main(
            default_argument_parser().parse_args(
                ["--config-file", str(config), *tiny_opts(out, tiny[2], max_iter=3), "~dataloader.evaluator"]
            )
        )
    assert "Full config (interpolations resolved):\ncfg.dataloader" in caplog.text
    assert "cfg.model = tests.fixtures.centernet_lite.CenterNetLite(" in caplog.text
    assert "recipe.lr_factor_func" in caplog.text  # the save's warning names the key
    from_yaml = LazyConfig.load(os.path.join(out, "config.yaml"))
    from_pickle = LazyConfig.load(os.path.join(out, "config.yaml.pkl"))
    assert from_pickle.recipe.lr_factor_func("backbone.stem") == 0.1
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["model"]
    for cfg in (from_yaml, from_pickle):
        model = instantiate(cfg.model)
        model.load_state_dict(final)  # strict: the same architecture
        assert cfg.train.max_iter == 3


def test_bf16_autocast_on_cpu_trains_and_evaluates(trained, tiny, tmp_path):
    """``train.amp.enabled=True`` on a CPU: bf16 autocast training (finite, decreasing losses) and evaluation, and
    ``--eval-only`` of the fp32-trained checkpoint under autocast within 1 AP of the fp32 evaluation."""
    out = str(tmp_path / "amp")
    _run(*tiny_opts(out, tiny[2], max_iter=20, **{"train.amp.enabled": True, "train.eval_period": 0}))
    rows = _metrics(out)
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    assert any("bbox/AP" in r for r in rows)
    results = _run(
        "--eval-only",
        *tiny_opts(
            str(tmp_path / "amp_eval"),
            tiny[2],
            max_iter=40,
            **{"train.init_checkpoint": os.path.join(trained, "model_final.pth"), "train.amp.enabled": True},
        ),
    )
    final = [r for r in _metrics(trained) if "bbox/AP" in r][-1]
    assert results["bbox"]["AP"] == pytest.approx(final["bbox/AP"], abs=1.0)


def _salience_losses(tiny, out, kernels):
    argv = ["--config-file", SALIENCE_CONFIG, *tiny_opts(out, tiny[2], max_iter=3, crop=False)]
    argv.append(f"train.kernels={kernels}")
    train_net.main(default_argument_parser().parse_args(argv))
    return [r["total_loss"] for r in _metrics(out) if "total_loss" in r]


@pytest.mark.parametrize("kernels", ["pytorch", pytest.param("triton", marks=pytest.mark.slow)])
def test_train_kernels_selects_the_kernels_and_trains_like_the_config(tiny, tmp_path, caplog, kernels):
    """``train.kernels=NAME`` runs every module that has a kernel of that name with it (``pytorch``: the reference
    kernels; ``triton``: here under Triton's interpreter): the same losses as the config's kernels, to float
    rounding, and the log names what was switched."""
    if kernels == "triton":
        require_triton_on_cpu()
    expected = _salience_losses(tiny, str(tmp_path / "config"), "null")
    with caplog.at_level(logging.INFO, logger="train_net"):
        actual = _salience_losses(tiny, str(tmp_path / kernels), kernels)
    assert len(actual) == len(expected) == 3
    assert actual == pytest.approx(expected, rel=1e-4)
    assert f"train.kernels='{kernels}': 4 modules (MultiScaleDeformableAttention) run the '{kernels}'" in caplog.text


def test_train_kernels_with_a_wrong_name_or_device_fails_before_training(tiny, tmp_path, monkeypatch):
    base = ["--config-file", SALIENCE_CONFIG, *tiny_opts(str(tmp_path / "bad"), tiny[2], max_iter=3, crop=False)]
    with pytest.raises(ValueError, match=r"no module of the model has a kernel backend 'tritn'.*'native'.*'triton'"):
        train_net.main(default_argument_parser().parse_args([*base, "train.kernels=tritn"]))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"train.kernels='triton' .* runs on CUDA tensors"):
        train_net.main(default_argument_parser().parse_args([*base, "train.kernels=triton", "train.device=cpu"]))
    assert not os.path.exists(os.path.join(str(tmp_path / "bad"), "metrics.json"))
