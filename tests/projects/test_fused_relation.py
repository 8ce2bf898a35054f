"""The ``"fused"`` and ``"triton"`` relation backends equal the ``"pytorch"`` reference: values and gradients
(projection, bias, LP-DETR's ``Lambda``) in float64 for every relation variant, block boundaries, degenerate boxes,
float32 and autocast; and they never hold the embedding. The Triton kernels run under Triton's interpreter here."""

import copy

import pytest
import torch

from projects.lp_detr.modeling import BoxRelationEmbedding, ProgressiveRelationEmbedding
from projects.lp_detr.modeling import fused_relation as fused_module
from tests.modeling.triton import require_triton_on_cpu

#: the backends that compute the relation without its embedding
FUSED_BACKENDS = ["fused", "triton"]

VARIANTS = [
    (BoxRelationEmbedding, {}),
    (BoxRelationEmbedding, {"with_giou": True, "num_relation_heads": 5}),
    (ProgressiveRelationEmbedding, {"num_layers": 6}),
    (ProgressiveRelationEmbedding, {"num_layers": 6, "medium_form": "log", "normalize_lambda": True}),
    (ProgressiveRelationEmbedding, {"num_layers": 6, "with_giou": False, "sine_dim": 8, "scale": 30.0}),
]


def _boxes(batch, num, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, num, 2, generator=generator, dtype=dtype)
    sizes = torch.rand(batch, num, 2, generator=generator, dtype=dtype) * 0.4 + 0.005
    return torch.cat([centres, sizes], -1)


@pytest.fixture(autouse=True)
def _triton_needs_its_interpreter(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "triton" in callspec.params.values():
        require_triton_on_cpu()


def _pair(cls, kwargs, dtype=torch.float64, seed=0, backend="fused"):
    torch.manual_seed(seed)
    reference = cls(**kwargs).to(dtype)
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.3)
    fused = copy.deepcopy(reference)
    fused.backend = backend
    return reference, fused


def _forward_backward(module, src, tgt, layer_idx, grad):
    module.zero_grad()
    output = module(src, tgt, layer_idx)
    (output * grad).sum().backward()
    return output, {name: p.grad.clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("layer_idx", [1, 4])
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_equals_reference_in_float64(cls, kwargs, layer_idx, backend):
    reference, fused = _pair(cls, kwargs, backend=backend)
    src, tgt = _boxes(2, 37, 1), _boxes(2, 29, 2)
    grad = torch.randn(2, reference.num_heads, 37, 29, dtype=torch.float64)
    expected, expected_grads = _forward_backward(reference, src, tgt, layer_idx, grad)
    actual, actual_grads = _forward_backward(fused, src, tgt, layer_idx, grad)
    assert (expected > 0).float().mean() > 0.2  # the ReLU is active on part of the pairs
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-11)
    assert expected_grads.keys() == actual_grads.keys()
    for name in expected_grads:
        torch.testing.assert_close(actual_grads[name], expected_grads[name], rtol=1e-9, atol=1e-10, msg=name)


def test_blocks_of_rows_give_the_same_result(monkeypatch):
    reference, fused = _pair(ProgressiveRelationEmbedding, {"num_layers": 4})
    src, tgt = _boxes(2, 23, 3), _boxes(2, 31, 4)
    grad = torch.randn(2, 8, 23, 31, dtype=torch.float64)
    expected, expected_grads = _forward_backward(reference, src, tgt, 2, grad)
    for rows in (1, 5, 22, 23):  # one row per block, blocks not dividing the rows, one block
        monkeypatch.setattr(fused_module, "BLOCK_ELEMENTS", rows * 2 * 31 * 5 * 16)
        actual, actual_grads = _forward_backward(fused, src, tgt, 2, grad)
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-11)
        for name in expected_grads:
            torch.testing.assert_close(actual_grads[name], expected_grads[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_degenerate_identical_and_empty_boxes(backend):
    boxes = torch.tensor(
        [
            [
                [0.5, 0.5, 0.0, 0.0],
                [0.5, 0.5, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.3],
                [1.0, 1.0, 1.0, 1.0],
                [0.2, 0.2, 0.1, 0.1],
            ]
        ],
        dtype=torch.float64,
    )
    for cls, kwargs in VARIANTS:
        reference, fused = _pair(cls, kwargs, backend=backend)
        torch.testing.assert_close(fused(boxes, boxes, 2), reference(boxes, boxes, 2), rtol=1e-9, atol=1e-9)
        assert fused(boxes[:, :0], boxes, 2).shape == (1, reference.num_heads, 0, 5)
        assert fused(boxes, boxes[:, :0], 2).shape == (1, reference.num_heads, 5, 0)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_float32_and_autocast_stay_close_to_the_reference(backend):
    reference, fused = _pair(ProgressiveRelationEmbedding, {"num_layers": 6}, dtype=torch.float32, backend=backend)
    src, tgt = _boxes(2, 60, 5, torch.float32), _boxes(2, 60, 6, torch.float32)
    expected = reference(src, tgt, 3)
    actual = fused(src, tgt, 3)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.detach().abs().max()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = fused(src, tgt, 3)  # computed in float32 whatever autocast says
    torch.testing.assert_close(autocast.float(), actual)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_never_builds_a_pairwise_embedding(monkeypatch, backend):
    """No tensor with ``N1 * N2 * sine_dim`` or more elements per image is created, forward or backward, beyond
    the ``[B, K, N1, N2]`` output and its gradients."""
    reference, fused = _pair(ProgressiveRelationEmbedding, {"num_layers": 6}, dtype=torch.float32, backend=backend)
    monkeypatch.setattr(fused_module, "BLOCK_ELEMENTS", 4 * 64 * 5 * 16)
    src, tgt = _boxes(1, 64, 7, torch.float32), _boxes(1, 64, 8, torch.float32)
    largest = []

    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if isinstance(result, torch.Tensor):
                largest.append(result.numel())
            return result

    with Watch():
        output = fused(src, tgt, 2)
        output.sum().backward()
    assert max(largest) <= output.numel()
    with Watch():
        reference(src, tgt, 2).sum().backward()
    assert max(largest) >= 64 * 64 * 5 * 16  # the reference holds the whole [1, 64, 64, 80] embedding


def test_triton_needs_the_formula_of_the_pairwise_features():
    """A relation module that gives its pairwise features only as a function cannot run the Triton kernel, which
    computes them itself: the error says so and names the backends that can."""
    require_triton_on_cpu()

    class CustomPairs(BoxRelationEmbedding):
        def relation_terms(self, src_boxes, tgt_boxes, layer_idx):
            terms = super().relation_terms(src_boxes, tgt_boxes, layer_idx)
            terms.pair_spec = None
            return terms

    module = CustomPairs(backend="triton").double()
    boxes = _boxes(1, 6, 9)
    with pytest.raises(ValueError, match="pair_spec.*'fused' or 'pytorch'"):
        module(boxes, boxes)
    module.backend = "fused"
    assert module(boxes, boxes).shape == (1, 8, 6, 6)


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    module = BoxRelationEmbedding(backend="triton")
    boxes = _boxes(1, 4, 10, torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="runs on CUDA tensors.*TRITON_INTERPRET=1.*select another backend"):
        module(boxes, boxes)
