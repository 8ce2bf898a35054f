"""Multi-scale deformable attention against a slow reference with explicit bilinear interpolation, on every sampling
backend; the ``"gather"``, ``"native"`` (C++) and ``"triton"`` (Triton, here under its interpreter) backends against
the ``"pytorch"`` reference (values and gradients, float64)."""

import math

import pytest
import torch

from modeling.layers import SAMPLING_BACKENDS, MultiScaleDeformableAttention, ms_deform_attn_sampling
from tests.modeling.native import require_native_sampling
from tests.modeling.triton import require_triton_on_cpu

BACKENDS = ["pytorch", "gather", "native", "triton", "auto"]
#: the backends that replace the reference with a kernel of their own
FAST_BACKENDS = ["gather", "native", "triton"]

SHAPES = [(3, 4), (2, 2)]


@pytest.fixture(autouse=True)
def _native_backend_needs_its_kernel(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "native" in callspec.params.values():
        require_native_sampling()
    if callspec is not None and "triton" in callspec.params.values():
        require_triton_on_cpu()


def _bilinear(feature, x, y):
    """Reads ``feature[C, H, W]`` at pixel coordinates ``(x, y)`` (pixel centres at integers), zeros outside."""
    _, height, width = feature.shape
    x0, y0 = math.floor(x), math.floor(y)
    result = torch.zeros(feature.shape[0], dtype=feature.dtype)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
        if 0 <= xi < width and 0 <= yi < height:
            result += weight * feature[:, yi, xi]
    return result


def _reference_sampling(value, shapes, locations, weights):
    """Loops over batch, query, head, level and point; ``value [B, S, M, D]`` -> ``[B, Q, M * D]``."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads, dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for level, (h, w) in enumerate(shapes):
                    feature = value[b, starts[level] : starts[level + 1], m].T.reshape(dim, h, w)
                    for p in range(points):
                        x = locations[b, q, m, level, p, 0].item() * w - 0.5
                        y = locations[b, q, m, level, p, 1].item() * h - 0.5
                        out[b, q, m] += weights[b, q, m, level, p] * _bilinear(feature, x, y)
    return out.flatten(2)


def _sampling_inputs(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in SHAPES)
    value = torch.randn(2, num_value, 2, 3, dtype=dtype, generator=generator)
    locations = torch.rand(2, 3, 2, len(SHAPES), 2, 2, dtype=dtype, generator=generator) * 1.4 - 0.2
    weights = torch.rand(2, 3, 2, len(SHAPES), 2, dtype=dtype, generator=generator)
    return value, locations, weights


def _level_start_index(shapes):
    sizes = torch.tensor([h * w for h, w in shapes])
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_matches_explicit_bilinear_loops(backend):
    sampling = SAMPLING_BACKENDS[backend]
    value, locations, weights = _sampling_inputs()
    expected = _reference_sampling(value, SHAPES, locations, weights)
    spatial_shapes = torch.tensor(SHAPES)
    actual = sampling(value, spatial_shapes, _level_start_index(SHAPES), locations, weights)
    assert actual.shape == (2, 3, 6)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sampling(value, SHAPES, None, locations, weights), actual)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_outside_the_map_reads_zeros(backend):
    value, locations, weights = _sampling_inputs()
    for far in (5.0, -5.0, 1.26, -0.26):  # beyond the half-pixel reach of bilinear reads on every level
        locations_far = torch.full_like(locations, far)
        assert SAMPLING_BACKENDS[backend](value, SHAPES, None, locations_far, weights).abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_rejects_wrong_spatial_shapes(backend):
    value, locations, weights = _sampling_inputs()
    with pytest.raises(ValueError, match="cover"):
        SAMPLING_BACKENDS[backend](value, [(3, 4), (2, 3)], None, locations, weights)


@pytest.mark.parametrize(
    "backend",
    # the interpreted Triton kernels take minutes here; test_fast_backends_equal_the_reference... checks their
    # gradients against the reference's in float64
    [pytest.param(b, marks=pytest.mark.slow) if b == "triton" else b for b in BACKENDS],
)
def test_sampling_gradcheck(backend):
    value, locations, weights = _sampling_inputs()
    locations = (locations * 0.5 + 0.25).detach()  # away from pixel-centre kinks
    inputs = tuple(t.clone().requires_grad_(True) for t in (value, locations, weights))
    sampling = SAMPLING_BACKENDS[backend]
    assert torch.autograd.gradcheck(lambda v, loc, w: sampling(v, SHAPES, None, loc, w), inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    "shapes, batch, queries, heads, dim, points",
    [
        ([(13, 17), (7, 9), (4, 5), (2, 3)], 2, 40, 8, 4, 4),  # four odd-sized levels, as the models use them
        ([(6, 11)], 1, 25, 2, 3, 3),  # a single level
        ([(1, 1), (5, 2)], 3, 7, 1, 5, 1),  # a 1x1 level, one head, one point
        ([(9, 7), (5, 4)], 2, 30, 4, 16, 2),  # the heads of the synthetic configs
    ],
)
def test_fast_backends_equal_the_reference_values_and_gradients(backend, shapes, batch, queries, heads, dim, points):
    generator = torch.Generator().manual_seed(len(shapes) * 10 + batch)
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(batch, num_value, heads, dim, dtype=torch.float64, generator=generator)
    # locations inside, on the border and outside the map, some exactly on pixel corners and centres
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, dtype=torch.float64, generator=generator)
    locations = locations * 1.6 - 0.3
    locations[:, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)[torch.randint(2, locations[:, :2].shape)]
    weights = torch.rand(batch, queries, heads, len(shapes), points, dtype=torch.float64, generator=generator)
    inputs = [t.requires_grad_(True) for t in (value, locations, weights)]
    grad = torch.randn(batch, queries, heads * dim, dtype=torch.float64, generator=generator)
    results = []
    for name in ("pytorch", backend):
        output = SAMPLING_BACKENDS[name](*inputs[:1], torch.tensor(shapes), None, *inputs[1:])
        results.append((output, torch.autograd.grad(output, inputs, grad)))
    (expected, expected_grads), (actual, actual_grads) = results
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for name, a, e in zip(("value", "locations", "weights"), actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"grad of {name}: {m}")


def _record_kernels(monkeypatch):
    from modeling.layers import ms_deform_attn as module

    calls = []

    def recording(name):
        kernel = getattr(module, name)
        return lambda *args: calls.append(name) or kernel(*args)

    for name in ("ms_deform_attn_gather", "ms_deform_attn_sampling", "ms_deform_attn_native"):
        monkeypatch.setattr(module, name, recording(name))
    return module, calls


@pytest.mark.parametrize("dim", [8, 16, 32])
def test_auto_backend_picks_its_kernel_by_gradients_and_head_width(monkeypatch, dim):
    """Without the native kernel, ``"auto"`` runs ``"gather"`` without gradients and for training with heads of
    >= 16 channels, the reference for training with narrower heads; with it, the native kernel on the CPU."""
    module, calls = _record_kernels(monkeypatch)
    value, locations, weights = _sampling_inputs()
    value = value.repeat_interleave(dim // value.shape[-1] + 1, -1)[..., :dim]

    def inference_then_training():
        with torch.no_grad():
            module.ms_deform_attn_auto(value, SHAPES, None, locations, weights)
        module.ms_deform_attn_auto(value, SHAPES, None, locations.clone().requires_grad_(True), weights)

    monkeypatch.setattr(module, "_native_library", lambda required=False: None)
    inference_then_training()
    trained_with = "ms_deform_attn_gather" if dim >= module.AUTO_GATHER_MIN_HEAD_DIM else "ms_deform_attn_sampling"
    assert calls == ["ms_deform_attn_gather", trained_with]
    monkeypatch.undo()
    require_native_sampling()
    module, calls = _record_kernels(monkeypatch)
    inference_then_training()
    assert calls == ["ms_deform_attn_native"] * 2


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_float32_and_bfloat16_values_follow_the_reference(backend):
    value, locations, weights = (t.float() for t in _sampling_inputs(seed=3))
    expected = ms_deform_attn_sampling(value, SHAPES, None, locations, weights)
    torch.testing.assert_close(SAMPLING_BACKENDS[backend](value, SHAPES, None, locations, weights), expected)
    # a bf16 value (autocast's value projection) is read in bf16; the weights and the result are float32
    actual = SAMPLING_BACKENDS[backend](value.bfloat16(), SHAPES, None, locations, weights)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gradients_with_a_bfloat16_value_follow_the_reference(backend):
    # under autocast the value is bf16: "gather"'s per-neighbour dot products then run as bf16 products
    value, locations, weights = (t.float() for t in _sampling_inputs(seed=5))
    generator = torch.Generator().manual_seed(6)
    grad = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], generator=generator)
    results = []
    for name, dtype in (("pytorch", torch.float32), (backend, torch.bfloat16)):
        inputs = [value.to(dtype).detach().requires_grad_(True), locations.clone().requires_grad_(True)]
        inputs.append(weights.clone().requires_grad_(True))
        out = SAMPLING_BACKENDS[name](inputs[0], SHAPES, None, inputs[1], inputs[2])
        (out.float() * grad).sum().backward()
        assert inputs[0].grad.dtype == dtype
        results.append([t.grad.float() for t in inputs])
    for actual, expected in zip(results[1], results[0]):
        scale = expected.abs().max()
        torch.testing.assert_close(actual / scale, expected / scale, rtol=0, atol=0.03)


def test_triton_reads_half_precision_values_and_accumulates_in_float32():
    """Under CUDA autocast the value projection gives float16 (or bf16) values; the kernel reads them as they are
    and accumulates in float32, so the result is the reference's on the rounded values, to float32 rounding."""
    require_triton_on_cpu()
    value, locations, weights = (t.float() for t in _sampling_inputs(seed=11))
    for dtype in (torch.float16, torch.bfloat16):
        rounded = value.to(dtype)
        inputs = [rounded.detach().requires_grad_(True), locations.clone().requires_grad_(True)]
        inputs.append(weights.clone().requires_grad_(True))
        actual = SAMPLING_BACKENDS["triton"](inputs[0], SHAPES, None, inputs[1], inputs[2])
        assert actual.dtype == torch.float32
        reference_inputs = [
            rounded.float().requires_grad_(True),
            *(t.detach().clone().requires_grad_(True) for t in inputs[1:]),
        ]
        expected = ms_deform_attn_sampling(reference_inputs[0], SHAPES, None, *reference_inputs[1:])
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(expected)
        actual_grads = torch.autograd.grad(actual, inputs, grad)
        expected_grads = torch.autograd.grad(expected, reference_inputs, grad)
        assert actual_grads[0].dtype == dtype
        torch.testing.assert_close(actual_grads[0].float(), expected_grads[0].to(dtype).float())
        for a, e in zip(actual_grads[1:], expected_grads[1:]):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_triton_backend_says_where_it_cannot_run(monkeypatch):
    from modeling.layers import triton_support

    value, locations, weights = _sampling_inputs()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="runs on CUDA tensors.*TRITON_INTERPRET=1.*got tensors on cpu"):
        SAMPLING_BACKENDS["triton"](value, SHAPES, None, locations, weights)
    monkeypatch.setattr(triton_support, "triton_unavailable_reason", lambda: "the 'triton' package is not installed")
    with pytest.raises(RuntimeError, match="needs Triton: the 'triton' package is not installed; select another"):
        SAMPLING_BACKENDS["triton"](value, SHAPES, None, locations, weights)


def test_native_results_do_not_depend_on_the_thread_count():
    """The native backward gives each thread whole (batch, head) pairs, so every value-gradient row is summed in
    the same order whatever the number of threads: bit-identical results."""
    require_native_sampling()
    generator = torch.Generator().manual_seed(7)
    shapes = [(11, 13), (6, 7), (3, 4)]
    value = torch.randn(3, sum(h * w for h, w in shapes), 4, 8, generator=generator)
    locations = torch.rand(3, 50, 4, len(shapes), 4, 2, generator=generator) * 1.2 - 0.1
    weights = torch.rand(3, 50, 4, len(shapes), 4, generator=generator)
    grad = torch.randn(3, 50, 32, generator=generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            inputs = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
            out = SAMPLING_BACKENDS["native"](inputs[0], shapes, None, inputs[1], inputs[2])
            results.append([out, *torch.autograd.grad(out, inputs, grad)])
    finally:
        torch.set_num_threads(threads)
    for single, multi in zip(*results):
        assert torch.equal(single, multi)


def test_native_rejects_double_backward():
    require_native_sampling()
    value, locations, weights = (t.requires_grad_(True) for t in _sampling_inputs())
    out = SAMPLING_BACKENDS["native"](value, SHAPES, None, locations, weights)
    (grad_value,) = torch.autograd.grad(out.square().sum(), value, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        grad_value.sum().backward()


def _module_and_inputs(num_points=2, seed=0):
    torch.manual_seed(seed)
    attn = MultiScaleDeformableAttention(embed_dim=8, num_heads=2, num_levels=len(SHAPES), num_points=num_points)
    with torch.no_grad():
        for param in attn.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    num_value = sum(h * w for h, w in SHAPES)
    query, value = torch.randn(2, 3, 8), torch.randn(2, num_value, 8)
    return attn.double(), query.double(), value.double()


def _reference_module(attn, query, reference_points, value, mask=None):
    """Deformable attention written out with the slow sampler."""
    batch, queries, _ = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    projected = attn.value_proj(value)
    if mask is not None:
        projected = projected * (~mask)[..., None]
    projected = projected.view(batch, value.shape[1], heads, -1)
    offsets = attn.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
    logits = attn.attention_weights(query).view(batch, queries, heads, levels * points)
    weights = logits.softmax(-1).view(batch, queries, heads, levels, points)
    locations = torch.empty_like(offsets)
    for level, (h, w) in enumerate(SHAPES):
        ref = reference_points[:, :, None, level, None, :]
        if reference_points.shape[-1] == 2:
            size = torch.tensor([w, h], dtype=query.dtype)
            locations[:, :, :, level] = ref + offsets[:, :, :, level] / size
        else:
            scale = ref[..., 2:] * 0.5 / points
            locations[:, :, :, level] = ref[..., :2] + offsets[:, :, :, level] * scale
    return attn.output_proj(_reference_sampling(projected, SHAPES, locations, weights))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_matches_reference(ref_dim, backend):
    attn, query, value = _module_and_inputs()
    attn.backend = backend
    reference_points = torch.rand(2, 3, len(SHAPES), ref_dim, dtype=torch.float64)
    expected = _reference_module(attn, query, reference_points, value)
    spatial_shapes = torch.tensor(SHAPES)
    actual = attn(query, reference_points, value, spatial_shapes, _level_start_index(SHAPES))
    assert actual.shape == (2, 3, 8)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_mask_zeroes_values(backend):
    attn, query, value = _module_and_inputs()
    attn.backend = backend
    reference_points = torch.rand(2, 3, len(SHAPES), 2, dtype=torch.float64)
    mask = torch.zeros(2, value.shape[1], dtype=torch.bool)
    mask[0, -4:] = True
    mask[1, 2:5] = True
    expected = _reference_module(attn, query, reference_points, value, mask)
    actual = attn(query, reference_points, value, SHAPES, key_padding_mask=mask)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    perturbed = value.masked_fill(mask[..., None], 1e3)
    torch.testing.assert_close(attn(query, reference_points, perturbed, SHAPES, key_padding_mask=mask), actual)


def test_initialisation_matches_official_scheme():
    attn = MultiScaleDeformableAttention(embed_dim=32, num_heads=8, num_levels=3, num_points=4)
    assert attn.sampling_offsets.weight.shape == (8 * 3 * 4 * 2, 32)
    assert attn.attention_weights.weight.shape == (8 * 3 * 4, 32)
    assert attn.value_proj.weight.shape == attn.output_proj.weight.shape == (32, 32)
    assert attn.sampling_offsets.weight.abs().max() == 0
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    assert attn.value_proj.bias.abs().max() == 0 and attn.output_proj.bias.abs().max() == 0
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    directions = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    for head, direction in enumerate(directions):
        for point in range(4):
            expected = torch.tensor(direction, dtype=torch.float32) * (point + 1)
            torch.testing.assert_close(bias[head, :, point], expected.expand(3, 2), atol=1e-5, rtol=0)
    bound = math.sqrt(6 / (32 + 32))
    assert attn.value_proj.weight.abs().max() <= bound and attn.value_proj.weight.std() > bound / 4


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(embed_dim=30, num_heads=8)
    attn, query, value = _module_and_inputs()
    with pytest.raises(ValueError, match="2 .points. or 4"):
        attn(query, torch.rand(2, 3, len(SHAPES), 3, dtype=torch.float64), value, SHAPES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_reach_all_parameters_and_inputs(backend):
    attn, query, value = _module_and_inputs()
    attn.backend = backend
    attn = attn.float()
    query = query.float().requires_grad_(True)
    value = value.float().requires_grad_(True)
    reference_points = torch.rand(2, 3, len(SHAPES), 4, requires_grad=True)
    attn(query, reference_points, value, torch.tensor(SHAPES)).square().sum().backward()
    for tensor in [query, value, reference_points, *attn.parameters()]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_bfloat16_on_cpu(backend):
    attn, query, value = _module_and_inputs()
    attn.backend = backend
    attn, query, value = attn.float(), query.float(), value.float()
    reference_points = torch.rand(2, 3, len(SHAPES), 2)
    expected = attn(query, reference_points, value, torch.tensor(SHAPES))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = attn(query, reference_points, value, torch.tensor(SHAPES))
    assert actual.dtype == torch.bfloat16
    assert torch.isfinite(actual.float()).all()
    torch.testing.assert_close(actual.float(), expected, rtol=0.1, atol=0.15)


def test_a_trace_with_an_empty_padding_mask_still_masks():
    """Eager CPU code skips the masking when nothing is padded; a traced graph (ONNX export) must keep it."""
    attn, query, value = _module_and_inputs()
    reference_points = torch.rand(2, 3, len(SHAPES), 2, dtype=torch.float64)
    empty = torch.zeros(2, value.shape[1], dtype=torch.bool)
    padded = empty.clone()
    padded[0, -4:] = True

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, v, mask):
            return self.attn(query, reference_points, v, SHAPES, key_padding_mask=mask)

    run = Wrapper()
    with torch.no_grad():
        traced = torch.jit.trace(run, (value, empty), check_trace=False)
        torch.testing.assert_close(traced(value, padded), run(value, padded))
        torch.testing.assert_close(run(value, empty), run(value, None))
