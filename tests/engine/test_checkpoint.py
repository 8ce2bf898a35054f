"""Load policies of DetectionCheckpointer ("eval", "finetune", "resume") and the --resume fallback.

Atomic writes, the fine-tuning shape warning and the "shares no tensor" error are tested in test_train_loop.py.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn

from engine.checkpoint import (
    CheckpointReadError,
    DetectionCheckpointer,
    IncompatibleCheckpointError,
    class_dependent_keys,
)
from engine.train_loop import SimpleTrainer

MAX_LINES = 15


class ToyDetector(nn.Module):
    """A backbone, a neck and heads: 16 state-dict entries, 3 of them of ``num_classes`` (+1) rows."""

    def __init__(self, num_classes: int = 3, width: int = 8, box_dim: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Conv2d(width, width, 3))
        self.neck = nn.Linear(width, width)
        self.class_head = nn.Linear(width, num_classes)  # [C, D], [C]
        self.label_embed = nn.Embedding(num_classes + 1, width)  # [C + 1, D], like DINO's denoising labels
        self.box_head = nn.Linear(width, box_dim)


def _save(model: nn.Module, path, **extra) -> str:
    torch.save({"model": model.state_dict(), **extra}, path)
    return str(path)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _lines(messages: list[str]) -> int:
    return sum(len(m.splitlines()) for m in messages)


# ---------------------------------------------------------------------------------------------------------------
# "eval"


def test_eval_checkpoint_of_another_model_is_an_error_naming_missing_tensors(tmp_path):
    other = ToyDetector()
    state = {k: v for k, v in other.state_dict().items() if k.startswith("backbone.")}
    state.update({f"decoder.layers.{i}.weight": torch.zeros(2) for i in range(6)})
    path = str(tmp_path / "other.pth")
    torch.save({"model": state}, path)
    model = ToyDetector()
    before = _snapshot(model)
    with pytest.raises(IncompatibleCheckpointError) as info:
        DetectionCheckpointer(model).load(path, mode="eval")
    message = str(info.value)
    assert path in message and "does not fit the model ToyDetector" in message
    assert "7 of the model's 16 tensors are missing (neck 2, class_head 2, label_embed 1, box_head 2)" in message
    assert "e.g. neck.{weight, bias}, class_head.{weight, bias}" in message and "convert_checkpoint.py" in message
    assert len(message.splitlines()) < MAX_LINES
    _assert_unchanged(model, before)  # checked before anything is loaded


def test_eval_other_num_classes_loads_with_one_warning(tmp_path, caplog):
    source = ToyDetector(num_classes=5)
    path = _save(source, tmp_path / "coco.pth")
    model = ToyDetector(num_classes=3)
    head_before = model.class_head.weight.clone()
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(path, mode="eval")
    (message,) = _warnings(caplog)
    assert path in message and "Skipped 3 tensor(s)" in message
    assert "depend on num_classes (checkpoint 5 classes, model 3)" in message
    assert "class_head.weight: checkpoint (5, 8) vs model (3, 8)" in message
    assert "class_head.bias: checkpoint (5,) vs model (3,)" in message
    assert "label_embed.weight: checkpoint (6, 8) vs model (4, 8)" in message
    assert _lines([message]) < MAX_LINES
    assert torch.equal(model.backbone[0].weight, source.backbone[0].weight)
    assert torch.equal(model.box_head.weight, source.box_head.weight)
    assert torch.equal(model.class_head.weight, head_before)


@pytest.mark.parametrize(
    "key, shape",
    [
        ("neck.weight", (8, 4)),  # not a class dimension
        ("box_head.weight", (6, 8)),  # first dimension, but the model's size there is not num_classes
        ("class_head.weight", (3, 16)),  # a class head, mis-shaped in its input dimension
        ("backbone.2.weight", (8, 8, 1, 1)),  # another kernel size
    ],
)
def test_eval_other_shape_not_of_classes_is_an_error(tmp_path, key, shape):
    state = ToyDetector().state_dict()
    state[key] = torch.zeros(shape)
    path = str(tmp_path / "odd.pth")
    torch.save({"model": state}, path)
    model = ToyDetector()
    before = _snapshot(model)
    with pytest.raises(IncompatibleCheckpointError, match=r"1 tensor\(s\) have another shape") as info:
        DetectionCheckpointer(model).load(path, mode="eval")
    assert f"{key}: checkpoint {shape}" in str(info.value) and path in str(info.value)
    _assert_unchanged(model, before)


def test_class_dependent_tensors_must_agree_on_the_number_of_classes():
    model = ToyDetector(num_classes=3)
    rows = [("class_head.weight", (5, 8), (3, 8)), ("label_embed.weight", (8, 8), (4, 8))]  # 5 vs 7 classes
    assert class_dependent_keys(model, rows) == ([], None)
    assert class_dependent_keys(model, rows[:1]) == (rows[:1], 5)
    assert class_dependent_keys(model, rows[1:]) == ([], None)  # [C + 1, D] alone: no class head anchors it
    assert class_dependent_keys(model, [*rows[:1], ("label_embed.weight", (6, 8), (4, 8))])[1] == 5
    assert class_dependent_keys(nn.Linear(8, 3), rows[:1]) == ([], None)  # no num_classes attribute


def test_eval_tolerates_missing_batchnorm_counters_and_needs_a_path(tmp_path):
    state = ToyDetector().state_dict()
    del state["backbone.1.num_batches_tracked"]
    path = str(tmp_path / "old.pth")
    torch.save(state, path)  # a bare state dict
    DetectionCheckpointer(ToyDetector()).load(path, mode="eval")
    with pytest.raises(ValueError, match="eval mode needs the checkpoint"):
        DetectionCheckpointer(ToyDetector()).load("", mode="eval")


def test_unexpected_tensors_are_one_line(tmp_path, caplog):
    state = ToyDetector().state_dict()
    state.update({f"aux.layers.{i}.weight": torch.zeros(2) for i in range(140)})
    path = str(tmp_path / "extra.pth")
    torch.save({"model": state}, path)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(ToyDetector()).load(path, mode="eval")
    assert _warnings(caplog) == [
        f"Checkpoint '{path}' has 140 tensor(s) that the model ToyDetector does not use (ignored): "
        "aux.layers.*.weight (x140)"
    ]


# ---------------------------------------------------------------------------------------------------------------
# "finetune"


@pytest.mark.parametrize("provided, fits", [(8, True), (7, False)])
def test_finetune_needs_half_of_the_model_tensors(tmp_path, caplog, provided, fits):
    source = ToyDetector()
    state = dict(list(source.state_dict().items())[:provided])  # 16 tensors in the model
    path = str(tmp_path / "part.pth")
    torch.save({"model": state}, path)
    model = ToyDetector()
    before = _snapshot(model)
    if not fits:
        with pytest.raises(IncompatibleCheckpointError, match="provides only 7 of the model's 16 tensors") as info:
            DetectionCheckpointer(model).load(path)
        assert path in str(info.value) and "model.backbone.weights" in str(info.value)
        assert len(str(info.value).splitlines()) < MAX_LINES
        _assert_unchanged(model, before)
        return
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(path, mode="finetune")
    (message,) = _warnings(caplog)
    assert message.startswith(f"8 model tensor(s) are not in checkpoint '{path}'")
    assert torch.equal(model.backbone[0].weight, source.backbone[0].weight)


def test_finetune_counts_mis_shaped_tensors_as_not_provided(tmp_path, caplog):
    path = _save(ToyDetector(num_classes=5, width=4), tmp_path / "narrow.pth")  # box head bias, BatchNorm counter
    with pytest.raises(IncompatibleCheckpointError, match=r"only 2 of the model's 16 tensors .*14 of another shape"):
        DetectionCheckpointer(ToyDetector()).load(path)
    path = _save(ToyDetector(num_classes=5), tmp_path / "coco.pth")
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(ToyDetector()).load(path, mode="finetune")
    assert len(_warnings(caplog)) == 1 and "Skipped 3 tensor(s)" in _warnings(caplog)[0]


# ---------------------------------------------------------------------------------------------------------------
# "resume" and the --resume fallback


def _run_setup(save_dir, seed: int = 0) -> tuple[ToyDetector, SimpleTrainer, DetectionCheckpointer]:
    torch.manual_seed(seed)
    model = ToyDetector()
    trainer = SimpleTrainer(model, [], torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return model, trainer, DetectionCheckpointer(model, str(save_dir), trainer=trainer)


def _write_run(save_dir, iterations=(9, 19), final: bool = False) -> dict[int, dict[str, torch.Tensor]]:
    """Checkpoints of one run at ``iterations`` (weights differ per iteration); returns the weights saved."""
    model, trainer, checkpointer = _run_setup(save_dir)
    saved = {}
    for iteration in iterations:
        with torch.no_grad():
            model.neck.weight.fill_(float(iteration))
        trainer.iter = iteration
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        saved[iteration] = _snapshot(model)
    if final:
        checkpointer.save("model_final", iteration=iterations[-1])
    return saved


def _truncate(path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _damage(path, how: str) -> str:
    if how == "truncated":
        _truncate(path)
    elif how == "deleted":
        os.remove(path)
    else:
        with open(path, "w") as f:
            f.write("not a torch file\n")
    return str(path)


@pytest.mark.parametrize(
    "how, reason",
    [
        ("truncated", "(truncated: a torch zip archive without its end record"),
        ("deleted", "(file not found)"),
        ("garbage", "(not a torch file (it starts with b'not a to')"),
    ],
)
def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, caplog, how, reason):
    saved = _write_run(tmp_path)
    newest = _damage(tmp_path / "model_0000019.pth", how)
    model, trainer, checkpointer = _run_setup(tmp_path, seed=1)
    with caplog.at_level(logging.WARNING):
        extra = checkpointer.resume_or_load("", resume=True)
    assert trainer.iter == 9 and extra["iteration"] == 9
    assert checkpointer.resumed_from == str(tmp_path / "model_0000009.pth")
    _assert_unchanged(model, saved[9])
    messages = _warnings(caplog)
    assert messages[0].startswith(f"Resume: cannot read '{newest}' {reason}")
    assert messages[0].endswith("trying the next newest one")
    assert "model_0000009.pth' (iteration 9), the newest readable checkpoint" in messages[1]
    assert len(messages) == 2 and _lines(messages) < MAX_LINES


def test_reading_a_truncated_checkpoint_changes_nothing(tmp_path):
    _write_run(tmp_path)
    _truncate(tmp_path / "model_0000019.pth")
    model, trainer, checkpointer = _run_setup(tmp_path, seed=1)
    before, optimizer_before = _snapshot(model), trainer.optimizer.state_dict()
    with pytest.raises(CheckpointReadError, match="Cannot read checkpoint .*model_0000019.pth"):
        checkpointer.load(str(tmp_path / "model_0000019.pth"), mode="resume")
    _assert_unchanged(model, before)
    assert trainer.iter == 0 and trainer.optimizer.state_dict() == optimizer_before


def test_resume_order_puts_model_final_last_and_ignores_model_best(tmp_path):
    _write_run(tmp_path, iterations=(4, 9), final=True)  # an earlier run, finished at iteration 9
    _write_run(tmp_path, iterations=(14, 19))  # this run continues it with a larger max_iter
    torch.save({"model": {}}, tmp_path / "model_best.pth")
    names = [os.path.basename(p) for p in DetectionCheckpointer(nn.Linear(1, 1), str(tmp_path)).resume_candidates()]
    assert names == [
        "model_0000019.pth",
        "model_0000014.pth",
        "model_0000009.pth",
        "model_0000004.pth",
        "model_final.pth",
    ]


def test_resume_with_every_checkpoint_unreadable_starts_from_the_initial_checkpoint(tmp_path, caplog):
    _write_run(tmp_path, final=True)
    for name in ("model_0000009.pth", "model_0000019.pth", "model_final.pth"):
        _truncate(tmp_path / name)
    init = ToyDetector()
    init_path = _save(init, tmp_path.parent / f"{tmp_path.name}_init.pth")
    model, trainer, checkpointer = _run_setup(tmp_path, seed=1)
    with caplog.at_level(logging.WARNING):
        checkpointer.resume_or_load(init_path, resume=True)
    assert checkpointer.resumed_from is None and trainer.iter == 0
    _assert_unchanged(model, init.state_dict())
    messages = _warnings(caplog)
    assert len(messages) == 4 and all("Resume: cannot read" in m for m in messages[:3])
    assert messages[2].endswith("no older checkpoint is left")
    assert (
        messages[3]
        == f"Resume: no checkpoint in '{tmp_path}' can be read; starting from the initial checkpoint '{init_path}'"
    )

    model, trainer, checkpointer = _run_setup(tmp_path, seed=1)
    before = _snapshot(model)
    checkpointer.resume_or_load("", resume=True)  # no initial checkpoint: the initial weights, like a fresh run
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="eval mode needs the checkpoint"):
        DetectionCheckpointer(ToyDetector(), str(tmp_path)).resume_or_load("", resume=True, mode="eval")


def test_resume_mode_rejects_another_config_instead_of_falling_back(tmp_path):
    _write_run(tmp_path)
    model = ToyDetector(num_classes=5)
    trainer = SimpleTrainer(model, [], torch.optim.SGD(model.parameters(), lr=0.1))
    checkpointer = DetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    with pytest.raises(IncompatibleCheckpointError, match="to resume, every model tensor must come from it") as info:
        checkpointer.resume_or_load("", resume=True)
    assert "model_0000019.pth" in str(info.value) and "class_head.weight: checkpoint (3, 8) vs model (5, 8)" in str(
        info.value
    )
    assert trainer.iter == 0


def test_resume_false_loads_weights_only(tmp_path):
    saved = _write_run(tmp_path)
    model, trainer, checkpointer = _run_setup(tmp_path / "new", seed=1)
    checkpointer.resume_or_load(str(tmp_path / "model_0000019.pth"), resume=False)
    _assert_unchanged(model, saved[19])
    assert trainer.iter == 0 and checkpointer.resumed_from is None
    with pytest.raises(ValueError, match="use resume=True"):
        checkpointer.resume_or_load("", mode="resume")
