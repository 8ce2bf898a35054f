"""``train.hooks``: extra hooks from the config, instantiated by tools/train_net.py after the default hooks."""

import json
import os
import uuid

import pytest
from omegaconf import DictConfig

from core.lazy import LazyCall as L
from core.lazy import LazyConfig
from engine.defaults import default_argument_parser
from engine.train_loop import HookBase
from tests.tools.train_net_helpers import CONFIG, register_tiny, tiny_opts
from tools import train_net


class RecordingHook(HookBase):
    """Writes what it saw to ``{output_dir}/{name}.json`` after training (the test module may be imported twice)."""

    def __init__(self, output_dir=None, name="recording", period=1):
        self.output_dir, self.name, self.period = output_dir, name, period
        self.steps = 0

    def before_train(self):
        self.order = [type(h).__name__ for h in self.trainer.hooks]

    def after_step(self):
        self.steps += 1

    def after_train(self):
        with open(os.path.join(self.output_dir, f"{self.name}.json"), "w") as f:
            json.dump({"order": self.order, "steps": self.steps, "period": self.period}, f)


def test_default_is_empty():
    cfg = LazyConfig.load(CONFIG)
    assert list(cfg.train.hooks) == []
    assert train_net.build_config_hooks(cfg) == []


def test_hooks_from_the_command_line_are_registered_after_the_defaults(tmp_path):
    names = register_tiny(str(tmp_path / "data"), f"hooks_{uuid.uuid4().hex[:8]}")
    out = tmp_path / "out"
    target = "tests.tools.test_train_hooks_config.RecordingHook"
    hooks = (
        f"train.hooks=[{{_target_:{target},period:'${{...log_period}}'}},"
        f"{{_target_:{target},name:second,output_dir:'{tmp_path}'}}]"
    )
    opts = tiny_opts(str(out), names, max_iter=3)
    argv = ["--config-file", CONFIG, *opts, "~dataloader.evaluator", hooks]
    train_net.main(default_argument_parser().parse_args(argv))
    with open(out / "recording.json") as f:  # output_dir unset: train.output_dir
        first = json.load(f)
    with open(tmp_path / "second.json") as f:  # output_dir given: kept
        second = json.load(f)
    assert first["steps"] == second["steps"] == 3
    assert first["period"] == 1  # interpolated from train.log_period (tiny_opts sets 1)
    order = first["order"]
    assert order[-2:] == ["RecordingHook", "RecordingHook"] and order.index("PeriodicWriter") < len(order) - 2
    assert "LRScheduler" in order and "EvalHook" in order
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.train.hooks[0]._target_.endswith("RecordingHook")


def test_a_config_that_is_not_a_hook_is_an_error_naming_the_key():
    cfg = LazyConfig.load(CONFIG)
    cfg.train.hooks = [L(RecordingHook)(), L("argparse.Namespace")(a=1)]
    with pytest.raises(TypeError, match=r"train.hooks\[1\] must build a hook .*got Namespace"):
        train_net.build_config_hooks(cfg)
    cfg.train.hooks = [{"period": 1}]
    with pytest.raises(TypeError, match=r"train.hooks\[0\] must be a LazyCall"):
        train_net.build_config_hooks(cfg)
    cfg.train.hooks = [L(RecordingHook)(period=2)]
    (hook,) = train_net.build_config_hooks(cfg)
    assert isinstance(cfg.train.hooks[0], DictConfig) and hook.output_dir == cfg.train.output_dir and hook.period == 2
