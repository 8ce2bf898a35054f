"""The whole detector in float64: ``model.double()`` trains and predicts in float64 from end to end.

Fast paths are compared exactly with reference paths on a full model in float64, where float32 rounding does not
hide their differences; that needs a model with no float32 island: no tensor created in float32 next to float64
data, no cast of float64 data to float32 (the Hungarian cost, the NMS scores) and back. For Salience DETR, Relation
DETR and LP-DETR (their synthetic-data configs, made smaller), one training step and one inference run under
:class:`PrecisionSpy`, which records every operation that mixes float64 with a lower floating precision or converts
between them; the losses, the gradients and the detections must be finite float64 tensors.

A float32 model computes what it computed before (the dtype rules keep float32 where the model is float32): the
parity tests (``tests/projects/test_*_parity.py``, ``tests/modeling/test_criterion_parity.py``) check its numbers.
"""

import contextlib
import os
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from configs.common.models.cpu_size import cpu_sized
from core.lazy import LazyCall as L
from core.lazy import LazyConfig, instantiate
from modeling.layers import reference_kernels
from projects.salience_detr.modeling import FocusForegroundLoss
from tests.modeling.native import require_native_sampling
from tests.projects.batches import training_record

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "salience_detr": os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py"),
    "relation_detr": os.path.join(ROOT, "projects", "lp_detr", "configs", "relation_detr_r18_synthetic.py"),
    "lp_detr": os.path.join(ROOT, "projects", "lp_detr", "configs", "lp_detr_r18_synthetic.py"),
}
# Salience DETR with Focus DETR's foreground supervision (the ablation ``salience_detr_r50_focus_supervision_12ep``)
FOCUS = "salience_detr_focus_supervision"

LOWER_PRECISION = (torch.float16, torch.bfloat16, torch.float32)


class PrecisionSpy(TorchDispatchMode):
    """Records the operations that see float64 and a lower floating precision among their tensors: a mixed
    operation (float64 with a float32 input of at least one dimension; 0-dim inputs are Python scalars and do not
    set the result's dtype) or a conversion between the two, each with the innermost repository frame."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.dtype for t in _floating(tree_flatten((args, kwargs))[0]) if t.dim() > 0}
        dtypes = inputs | {t.dtype for t in _floating(tree_flatten(out)[0])}
        if torch.float64 in dtypes and any(d in dtypes for d in LOWER_PRECISION):
            self.found.append(f"{func} with {sorted(map(str, dtypes))} at {_repository_frame()}")
        return out


def _floating(values) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _repository_frame() -> str:
    """``path:line`` of the innermost frame in the repository's code (this test and the environment aside)."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.relpath(frame.filename, ROOT)
        if not path.startswith(("..", ".venv", os.path.join("tests", "modeling", "test_float64.py"))):
            return f"{path}:{frame.lineno}"
    return "<outside the repository>"


def small_model(name: str) -> torch.nn.Module:
    """The synthetic-data config of ``name`` made smaller (64 channels, 20 queries, 10 denoising queries), as a
    float64 model."""
    cfg = LazyConfig.load(CONFIGS["salience_detr" if name == FOCUS else name]).model
    cpu_sized(cfg, embed_dim=64, num_queries=20, d_ffn=128)
    cfg.denoising.denoising_nums = 10
    if name.startswith("salience_detr"):
        cfg.transformer.encoder.layer.token_attention.topk = 30
    if name == FOCUS:
        cfg.extra_losses.salience.loss = L(FocusForegroundLoss)(ignore_padding=True)
    torch.manual_seed(0)
    return instantiate(cfg).double()


def tiny_batch() -> list[dict]:
    """Two small images, one with two objects and one without any; the boxes in float64 (float32 boxes of a data
    loader are converted once, exactly, on entry, a conversion the spy would report)."""
    records = [
        training_record(64, 64, [[10.0, 12.0, 50.0, 60.0], [5.0, 5.0, 20.0, 30.0]], [1, 3], seed=1),
        training_record(48, 56, [], [], seed=2),
    ]
    return [{**record, "boxes": record["boxes"].double()} for record in records]


@pytest.mark.parametrize("name", [*sorted(CONFIGS), FOCUS])
def test_float64_model_trains_and_predicts_in_float64(name):
    model = small_model(name)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    batch = tiny_batch()
    spy = PrecisionSpy()
    model.train()
    with spy:
        losses = model(batch)
        sum(losses.values()).backward()
    assert losses and not [k for k, v in losses.items() if v.dtype != torch.float64], "losses not in float64"
    assert not [k for k, v in losses.items() if not torch.isfinite(v)], "non-finite losses"
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads) > len(list(model.parameters())) // 2, "most parameters should get a gradient"
    assert not [n for n, g in grads.items() if g.dtype != torch.float64], "gradients not in float64"
    assert not [n for n, g in grads.items() if not torch.isfinite(g).all()], "non-finite gradients"

    model.eval()
    with spy, torch.no_grad():
        detections = model(batch)
    assert len(detections) == len(batch)
    for result in detections:
        assert result["boxes"].dtype == result["scores"].dtype == torch.float64
        assert torch.isfinite(result["boxes"]).all() and torch.isfinite(result["scores"]).all()
        assert result["boxes"].shape[0] > 0
    assert not spy.found, "float64 mixed with a lower precision:\n" + "\n".join(dict.fromkeys(spy.found))


def _training_step(model: torch.nn.Module, batch: list[dict], reference: bool) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same denoising queries for both runs
    with reference_kernels(model) if reference else contextlib.nullcontext():
        losses = model(batch)
        sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("sampling", ["gather", "native"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_kernels_equal_the_reference_on_a_whole_model_in_float64(name, sampling):
    """The config's fast kernels (``"gather"`` or ``"native"`` sampling in place of ``"auto"``, ``"fused"``
    relation) against every module's reference backend, on a whole training step and an inference in float64:
    losses, every gradient, detections."""
    if sampling == "native":
        require_native_sampling()
    model = small_model(name).train()
    for module in model.modules():
        if getattr(module, "backend", None) == "auto":
            module.backend = sampling
    fast = [m for m in model.modules() if hasattr(m, "reference_backend") and m.backend != m.reference_backend]
    assert fast, "the config selects no fast kernel"
    batch = tiny_batch()
    expected_losses, expected_grads = _training_step(model, batch, reference=True)
    losses, grads = _training_step(model, batch, reference=False)
    assert losses.keys() == expected_losses.keys() and grads.keys() == expected_grads.keys()
    for key in losses:
        torch.testing.assert_close(losses[key], expected_losses[key], rtol=1e-10, atol=1e-12, msg=key)
    for key in grads:
        torch.testing.assert_close(grads[key], expected_grads[key], rtol=1e-8, atol=1e-10, msg=key)
    model.eval()
    with torch.no_grad():
        detections = model(batch)
        with reference_kernels(model):
            expected = model(batch)
    for result, reference in zip(detections, expected):
        for key in ("scores", "boxes"):
            torch.testing.assert_close(result[key], reference[key], rtol=1e-10, atol=1e-10)
