"""Trainer, hooks, scheduler and checkpointer behaviour on a toy model."""

import json
import math
import os

import pytest
import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler
from torch import nn

from engine import hooks
from engine.checkpoint import DetectionCheckpointer
from engine.ema import ModelEMA
from engine.events import JSONWriter
from engine.solver import LRMultiplier, WarmupParamScheduler, get_default_optimizer_params, iterations_from_epochs
from engine.train_loop import AMPTrainer, HookBase, SimpleTrainer


class ToyModel(nn.Module):
    """Regression with dropout, so the model's own randomness matters for exact resume."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))
        self.norm = nn.LayerNorm(4)

    def forward(self, batch):
        x, y = batch
        pred = self.net(self.norm(x))
        return {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": (pred - y).abs().mean() * 0.1}


class ToyLoader:
    """Deterministic infinite batches; batch k depends only on k (like the project's train loader)."""

    def __init__(self):
        self.start = 0

    def set_start_iter(self, it):
        self.start = it

    def __iter__(self):
        k = self.start
        while True:
            g = torch.Generator().manual_seed(1000 + k)
            x = torch.randn(16, 4, generator=g)
            yield x, x.sum(dim=1, keepdim=True)
            k += 1


def _build(tmp_path, max_iter=20, amp=False, seed=3, ema_decay=None):
    torch.manual_seed(0)
    model = ToyModel()
    ema_hook = hooks.EMAHook(ModelEMA(model, decay=ema_decay, warmup=0), model) if ema_decay else None
    opt = torch.optim.AdamW(get_default_optimizer_params(model, base_lr=0.01, weight_decay_norm=0.0), lr=0.01)
    cls = AMPTrainer if amp else SimpleTrainer
    trainer = cls(model, ToyLoader(), opt, clip_grad_params={"max_norm": 1.0}, seed=seed)
    sched = LRMultiplier(
        opt,
        WarmupParamScheduler(MultiStepParamScheduler([1.0, 0.1], milestones=[15], num_updates=20), warmup_iters=5),
        max_iter,
    )
    ckpt = DetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            ema_hook,  # before the checkpointer (as in train_net), so checkpoints hold the step's EMA
            hooks.LRScheduler(scheduler=sched),
            hooks.PeriodicCheckpointer(ckpt, period=10, max_iter=max_iter),
        ]
    )
    return model, trainer, ckpt


@pytest.mark.parametrize("amp", [False, True])
def test_resume_continues_exactly(tmp_path, amp):
    full_dir, resume_dir = tmp_path / "full", tmp_path / "resume"
    model_a, trainer_a, _ = _build(full_dir, amp=amp)
    trainer_a.train(0, 20)

    # Same run, interrupted after iteration 9 (the periodic checkpoint), then resumed in a fresh process-like setup.
    model_b, trainer_b, _ = _build(resume_dir, amp=amp)
    trainer_b.train(0, 10)
    model_c, trainer_c, ckpt_c = _build(resume_dir, amp=amp, seed=123)  # seed comes back from the checkpoint
    assert ckpt_c.has_checkpoint()
    ckpt_c.resume_or_load("", resume=True)
    assert trainer_c.iter == 9
    trainer_c.train(trainer_c.iter + 1, 20)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name
    assert trainer_c.optimizer.param_groups[0]["lr"] == trainer_a.optimizer.param_groups[0]["lr"]


def test_training_reduces_loss(tmp_path):
    model, trainer, _ = _build(tmp_path, max_iter=20)
    trainer.register_hooks([hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=1)])
    trainer.train(0, 20)
    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(20))
    assert rows[-1]["total_loss"] < rows[0]["total_loss"]
    assert {"loss_mse", "loss_l1", "lr", "data_time"} <= set(rows[5])
    assert math.isclose(rows[0]["total_loss"], rows[0]["loss_mse"] + rows[0]["loss_l1"], rel_tol=1e-6)


def test_scheduler_values_at_chosen_iterations():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    max_iter = 100
    multiplier = WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1, 0.01], milestones=[6, 9], num_updates=10),  # "epochs"
        warmup_iters=10,
        warmup_factor=0.001,
    )
    sched = LRMultiplier(opt, multiplier, max_iter)
    lrs = []
    for _ in range(max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5 * 0.001)
    assert lrs[5] == pytest.approx(0.5 * (0.001 + (1 - 0.001) * 5 / 10))  # linear warmup
    assert lrs[10] == pytest.approx(0.5)
    assert lrs[59] == pytest.approx(0.5)
    assert lrs[60] == pytest.approx(0.05)  # epoch 6 of 10
    assert lrs[89] == pytest.approx(0.05)
    assert lrs[90] == pytest.approx(0.005)
    assert lrs[99] == pytest.approx(0.005)


def test_scheduler_cosine_and_fractional_warmup():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = LRMultiplier(opt, WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), warmup_length=0.1), 50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001 * 1.0)
    assert lrs[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 50)))


def test_warmup_longer_than_training_is_an_error():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_iters=50 must be smaller than max_iter=20"):
        LRMultiplier(opt, WarmupParamScheduler(MultiStepParamScheduler([1.0], num_updates=1), warmup_iters=50), 20)


def test_iterations_from_epochs():
    assert iterations_from_epochs(12, 118287, 16) == (12 * 7393, 7393)
    assert iterations_from_epochs(2, 10, 4) == (6, 3)


def test_param_groups_factors_and_decay():
    model = nn.ModuleDict(
        {
            "backbone": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)),
            "attn": nn.ModuleDict({"sampling_offsets": nn.Linear(4, 4), "value_proj": nn.Linear(4, 4)}),
        }
    )
    groups = get_default_optimizer_params(
        model,
        base_lr=1e-4,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        lr_factors={"backbone": 0.1, "sampling_offsets": 0.1},
    )
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(by_param) == len(named)  # every parameter exactly once
    expect = {
        "backbone.0.weight": (1e-5, 1e-4),
        "backbone.0.bias": (1e-5, 0.0),
        "backbone.1.weight": (1e-5, 0.0),
        "attn.sampling_offsets.weight": (1e-5, 1e-4),
        "attn.value_proj.weight": (1e-4, 1e-4),
        "attn.value_proj.bias": (1e-4, 0.0),
    }
    for name, (lr, wd) in expect.items():
        g = by_param[id(named[name])]
        assert g["lr"] == pytest.approx(lr) and g["weight_decay"] == wd, name


class CountingHook(HookBase):
    def __init__(self):
        self.calls = {"before_train": 0, "after_train": 0, "before_step": 0, "after_backward": 0, "after_step": 0}

    def before_train(self):
        self.calls["before_train"] += 1

    def after_train(self):
        self.calls["after_train"] += 1

    def before_step(self):
        self.calls["before_step"] += 1

    def after_backward(self):
        self.calls["after_backward"] += 1

    def after_step(self):
        self.calls["after_step"] += 1


def test_hook_call_counts_and_eval_periods(tmp_path):
    model, trainer, _ = _build(tmp_path, max_iter=12)
    counter = CountingHook()
    evals = []

    def fake_eval():
        evals.append(trainer.iter)
        return {"bbox": {"AP": float(len(evals))}}

    ckpt = DetectionCheckpointer(model, str(tmp_path / "best"))
    os.makedirs(tmp_path / "best")
    trainer.register_hooks(
        [counter, hooks.EvalHook(5, fake_eval), hooks.BestCheckpointer(5, ckpt, "bbox/AP", mode="max")]
    )
    trainer.train(0, 12)
    assert counter.calls == {
        "before_train": 1,
        "after_train": 1,
        "before_step": 12,
        "after_backward": 12,
        "after_step": 12,
    }
    assert evals == [4, 9, 12]  # every 5 iterations and once after training
    assert trainer.storage.latest()["bbox/AP"][0] == 3.0
    best = torch.load(tmp_path / "best" / "model_best.pth", weights_only=False)
    assert best["best_metric"] == 3.0


def test_nonfinite_loss_raises(tmp_path):
    class NanModel(ToyModel):
        def forward(self, batch):
            return {"loss": super().forward(batch)["loss_mse"] * float("nan")}

    model = NanModel()
    trainer = SimpleTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError, match="iteration=0"):
        trainer.train(0, 2)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model, trainer, ckpt = _build(tmp_path)
    ckpt.save("model_a")
    before = (tmp_path / "model_a.pth").read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_a")
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_b")
    monkeypatch.undo()
    assert (tmp_path / "model_a.pth").read_bytes() == before
    assert not (tmp_path / "model_b.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_a.pth"]  # no temp files left


def test_checkpoint_shape_mismatch_skips_with_warning(tmp_path, caplog):
    src = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    DetectionCheckpointer(src, str(tmp_path)).save("src")
    dst = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5))  # another number of classes
    head_before = dst[1].weight.clone()
    with caplog.at_level("WARNING"):
        DetectionCheckpointer(dst).load(str(tmp_path / "src.pth"))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert torch.equal(dst[1].weight, head_before)
    assert "Skipped 2 tensor(s)" in caplog.text and "1.weight: checkpoint (3, 8) vs model (5, 8)" in caplog.text


def test_checkpoint_of_another_model_is_an_error(tmp_path):
    DetectionCheckpointer(nn.Sequential(nn.Linear(4, 8)), str(tmp_path)).save("other")
    with pytest.raises(ValueError, match="does not fit the model ToyModel"):
        DetectionCheckpointer(ToyModel()).load(str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        DetectionCheckpointer(ToyModel()).load(str(tmp_path / "nope.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint .*corrupt.pth"):
        DetectionCheckpointer(ToyModel()).load(str(tmp_path / "corrupt.pth"))


def test_ema_tracks_weights_restores_after_eval_and_resumes(tmp_path):
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.5, warmup=0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.5 * 1 + 0.5 * 3
    assert torch.allclose(ema.state["weight"], torch.full((1, 2), 2.0))
    with ema.apply_to(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 2.0))
    assert torch.allclose(model.weight, torch.full((1, 2), 3.0))  # training weights back after evaluation

    ramped = ModelEMA(model, decay=0.9, warmup=10)
    ramped.update(model)
    assert ramped.current_decay() == pytest.approx(0.9 * (1 - math.exp(-1 / 10)))

    # The EMA hook's state goes through the trainer's checkpoint and comes back on resume.
    net, trainer, ckpt = _build(tmp_path, max_iter=10, ema_decay=0.9)
    trainer.train(0, 10)
    saved = trainer.state_dict()["hooks"]["EMAHook"]
    assert saved["updates"] == 10
    net2, trainer2, ckpt2 = _build(tmp_path, max_iter=10, ema_decay=0.9)
    hook2 = next(h for h in trainer2.hooks if isinstance(h, hooks.EMAHook))
    ckpt2.resume_or_load("", resume=True)
    assert hook2.ema.updates == 10
    for key, value in saved["state"].items():
        assert torch.equal(hook2.ema.state[key], value), key
