"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch.

Every query attends to ``num_points`` sampled locations per head and per feature level. The locations are a
reference point (or box) plus offsets predicted from the query; the values there are read by bilinear
interpolation and mixed with softmax weights, also predicted from the query.

The sampling itself is a *backend* chosen per module (``MultiScaleDeformableAttention(backend=...)``, or
:func:`set_sampling_backend` on a built model): a function with the signature of :func:`ms_deform_attn_sampling`
registered in :data:`SAMPLING_BACKENDS` with :func:`register_sampling_backend`. ``"pytorch"`` (the default) is the
reference (``grid_sample`` per level); ``"pytorch_single_op"`` computes the same, seen by tracers as one op so that
FLOP counters can count the sampling by formula (:func:`ms_deform_attn_flops`). Faster kernels register here and
are tested against ``"pytorch"``.

Conventions:

* The flattened value sequence holds the levels one after the other, each level row-major ``(h, w)``.
* ``spatial_shapes[l] = (h_l, w_l)``; ``level_start_index[l] = sum_{k<l} h_k * w_k``.
* Locations are normalised to ``[0, 1]`` over the (padded) feature map, ``(x, y)`` order, ``(0, 0)`` the
  top-left corner of the top-left pixel. Samples outside the map read zeros (``align_corners=False``,
  ``padding_mode="zeros"``).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .switches import module_attributes
from .triton_support import require_triton_tensors

__all__ = [
    "SAMPLING_BACKENDS",
    "SINGLE_OP_NAME",
    "MultiScaleDeformableAttention",
    "ms_deform_attn_auto",
    "ms_deform_attn_flops",
    "ms_deform_attn_gather",
    "ms_deform_attn_sampling",
    "ms_deform_attn_triton",
    "register_sampling_backend",
    "set_sampling_backend",
]

SpatialShapes = Tensor | Sequence[Sequence[int]]


def _shapes_as_list(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _checked_shapes(spatial_shapes: SpatialShapes, value: Tensor, sampling_locations: Tensor) -> list[tuple[int, int]]:
    """``spatial_shapes`` as a list, checked against the value length and the locations' level count."""
    shapes = _shapes_as_list(spatial_shapes)
    num_value, num_levels = value.shape[1], sampling_locations.shape[3]
    if sum(h * w for h, w in shapes) != num_value:
        raise ValueError(f"spatial_shapes {shapes} cover {sum(h * w for h, w in shapes)} values, value has {num_value}")
    if len(shapes) != num_levels:
        raise ValueError(f"spatial_shapes has {len(shapes)} levels, sampling_locations has {num_levels}")
    return shapes


def ms_deform_attn_sampling(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Bilinear sampling of a multi-level value map, summed with attention weights.

    Computes, for each batch element ``b``, query ``q`` and head ``m``::

        out[b, q, m] = sum_{l, p} attention_weights[b, q, m, l, p] * bilinear(value_l[b, :, m], loc[b, q, m, l, p])

    Args:
        value: ``[B, S, M, D]`` values split into ``M`` heads of ``D`` channels, ``S = sum_l h_l * w_l``.
        spatial_shapes: ``[L, 2]`` long tensor (or a sequence) of ``(h_l, w_l)``.
        level_start_index: ``[L]`` offsets of the levels in ``S``; unused here (the offsets follow from
            ``spatial_shapes``), accepted so that a fused kernel can take the same arguments. May be ``None``.
        sampling_locations: ``[B, Q, M, L, P, 2]`` normalised ``(x, y)`` locations in ``[0, 1]``.
        attention_weights: ``[B, Q, M, L, P]`` weights (softmax-normalised over ``L * P`` by the caller).

    Returns:
        ``[B, Q, M * D]`` tensor, channels ordered head-major, in the promoted dtype of ``value`` and
        ``sampling_locations`` (float32 when either is float32).
    """
    del level_start_index
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    batch, num_value, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape

    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    value = value.to(dtype)
    grids = 2 * sampling_locations.to(dtype) - 1
    per_level = value.split([h * w for h, w in shapes], dim=1)
    sampled = []
    for level, (h, w) in enumerate(shapes):
        value_l = per_level[level].flatten(2).transpose(1, 2).reshape(batch * num_heads, head_dim, h, w)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(batch * num_heads, 1, num_queries, -1)
    output = (sampled * weights).sum(-1).view(batch, num_heads * head_dim, num_queries)
    return output.transpose(1, 2).contiguous()


#: rows times channels gathered at once in the backward pass of the ``"gather"`` backend (bounds its memory)
GATHER_BLOCK_ELEMENTS = 1 << 20


def _table_gradient(
    keys: Tensor, weights: Tensor, grad_out: Tensor, shapes: Sequence[tuple[int, int]], value_shape: torch.Size
) -> Tensor:
    """The value gradient: ``grad[v] = sum of weights[n, c, p] * grad_out[n]`` over the neighbours ``(n, c, p)``
    that read ``v``, level by level.

    Within a level the four neighbours of a sample sit at fixed offsets from its top-left one, so only the
    top-left positions are grouped: ``keys[n, p]`` numbers them on the level map padded by one pixel on each side
    (per batch element and head), one sort orders them, and four ``embedding_bag`` sums over ``grad_out`` (one per
    neighbour, each with its weights) give per-position sums that are added, shifted by the neighbour's offset, into
    the padded map. That sorts a quarter of the keys a sort of every neighbour's index would.

    Args:
        keys: ``[N, L * P]`` padded top-left positions (0 for samples with no neighbour inside the map).
        weights: ``[N, 2, 2, L * P]`` neighbour weights (top/bottom, left/right), zero outside the map.
        grad_out: ``[N, D]`` gradient of the sampled rows, ``N = B * Q * M``.
        shapes: the levels' ``(h, w)``.
        value_shape: ``(B, S, M, D)``.
    """
    batch, num_value, num_heads, channels = value_shape
    rows = grad_out.shape[0]
    num_points = keys.shape[1] // len(shapes)
    grad_value = grad_out.new_empty(value_shape)
    for level, ((h, w), start) in enumerate(zip(shapes, _level_starts(shapes))):
        columns = slice(level * num_points, (level + 1) * num_points)
        level_keys = keys[:, columns].reshape(-1)
        _, order = torch.sort(level_keys)
        num_keys = batch * num_heads * (h + 2) * (w + 2)
        offsets = torch.zeros(num_keys, dtype=keys.dtype, device=keys.device)
        offsets[1:] = torch.bincount(level_keys, minlength=num_keys).cumsum(0)[:-1]
        source_rows = torch.div(order, num_points, rounding_mode="floor").to(keys.dtype)
        level_weights = weights[..., columns].permute(0, 3, 1, 2).reshape(rows * num_points, 4)
        level_weights = level_weights.index_select(0, order).t().contiguous()  # [4, N * P], in key order
        padded = grad_out.new_zeros(batch * num_heads, h + 2, w + 2, channels)
        for corner, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            sums = F.embedding_bag(
                source_rows, grad_out, offsets, per_sample_weights=level_weights[corner], mode="sum"
            ).view(batch * num_heads, h + 2, w + 2, channels)
            padded[:, dy:, dx:] += sums[:, : h + 2 - dy, : w + 2 - dx]
        level_grad = padded[:, 1 : h + 1, 1 : w + 1].reshape(batch, num_heads, h * w, channels)
        grad_value[:, start : start + h * w] = level_grad.transpose(1, 2)
    return grad_value


def _gathered_dots(table: Tensor, index: Tensor, grad_out: Tensor) -> Tensor:
    """``dots[n, k] = <table[index[n, k]], grad_out[n]>``, gathering blocks of rows at a time."""
    rows, per_row = index.shape
    channels = table.shape[1]
    dots = torch.empty(rows, per_row, dtype=table.dtype, device=table.device)
    block = max(1, GATHER_BLOCK_ELEMENTS // max(per_row * channels, 1))
    for start in range(0, rows, block):
        end = min(start + block, rows)
        gathered = table.index_select(0, index[start:end].reshape(-1)).view(end - start, per_row, channels)
        if table.dtype in (torch.bfloat16, torch.float16):
            # a batch of [K, C] @ [C, 1] products: about 2x faster than multiply + sum in bf16 on the CPU
            torch.bmm(gathered, grad_out[start:end, :, None], out=dots[start:end, :, None])
        else:
            # an element-wise product and a sum over the channels: in float32, faster on the CPU than bmm
            torch.sum(gathered.mul_(grad_out[start:end, None]), -1, out=dots[start:end])
    return dots


class _DeformableGather(torch.autograd.Function):
    """Bilinear multi-level sampling as one weighted gather; the backward pass is written out.

    Forward: every sample's four neighbours (``[N, 2 (top, bottom), 2 (left, right), L * P]``, neighbours outside
    the map masked) become indices and weights (bilinear x attention) of one ``embedding_bag`` sum per row
    ``n = (b, q, m)``. Backward: the table gradient is the transposed gather (:func:`_table_gradient`); the
    per-neighbour dot products ``d = <value, grad>`` (:func:`_gathered_dots`) give the attention-weight gradient
    ``sum_c d_c wy_c wx_c`` and the location gradients ``a * sum_c d_c dw_c/dx`` (times the map size, from the
    normalisation), without autograd going through the index arithmetic.
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, shapes):
        batch, num_value, num_heads, head_dim = value.shape
        _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
        device = value.device
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
        rows, samples = batch * num_queries * num_heads, num_levels * num_points
        per_sample = [(h, w, start) for (h, w), start in zip(shapes, _level_starts(shapes)) for _ in range(num_points)]
        heights, widths, starts = torch.tensor(per_sample, device=device).unbind(1)  # [L * P] each

        grid = 2 * sampling_locations.to(dtype).reshape(rows, samples, 2) - 1
        x = ((grid[..., 0] + 1) * widths.to(dtype) - 1) / 2  # pixel coordinates as grid_sample computes them
        y = ((grid[..., 1] + 1) * heights.to(dtype) - 1) / 2
        x0, y0 = x.floor(), y.floor()
        wx = torch.stack([x0 + 1 - x, x - x0], 1)  # [N, 2, LP]: left, right
        wy = torch.stack([y0 + 1 - y, y - y0], 1)  # [N, 2, LP]: top, bottom
        attention = attention_weights.to(dtype).reshape(rows, samples)
        weights = (wy[:, :, None] * wx[:, None]) * attention[:, None, None]  # [N, 2, 2, LP]

        # int32 indices when the flat value rows and the padded top-left positions of every level fit
        padded_rows = batch * num_heads * (num_value + 2 * sum(h + w + 2 for h, w in shapes))
        index_dtype = torch.int32 if padded_rows < 2**31 else torch.int64
        x0, y0 = x0.to(index_dtype), y0.to(index_dtype)
        widths, heights = widths.to(index_dtype), heights.to(index_dtype)
        in_x = torch.stack([(x0 >= 0) & (x0 < widths), (x0 >= -1) & (x0 < widths - 1)], 1)
        in_y = torch.stack([(y0 >= 0) & (y0 < heights), (y0 >= -1) & (y0 < heights - 1)], 1)
        valid = in_y[:, :, None] & in_x[:, None]  # [N, 2, 2, LP]
        # flat index of (batch b, token s, head m) in value viewed as [B * S * M, D]; row n = (b * Q + q) * M + m
        row = torch.arange(rows, device=device, dtype=index_dtype)
        row_base = (row // (num_queries * num_heads)) * (num_value * num_heads) + row % num_heads
        top_left = row_base[:, None] + (starts.to(index_dtype) + y0 * widths + x0) * num_heads  # [N, LP]
        neighbours = torch.stack(
            [torch.stack([torch.zeros_like(widths), torch.ones_like(widths)]), torch.stack([widths, widths + 1])]
        )
        index = (top_left[:, None, None] + neighbours * num_heads).masked_fill_(~valid, 0).view(rows, -1)
        weights = weights.masked_fill_(~valid, 0).view(rows, -1).to(value.dtype)
        keys = None
        if ctx.needs_input_grad[0]:  # top-left positions on the padded level maps, for the value gradient
            inside = in_x.any(1) & in_y.any(1)  # some neighbour of the sample lies on the map
            head_row = (row // (num_queries * num_heads)) * num_heads + row % num_heads  # b * M + m
            keys = head_row[:, None] * ((heights + 2) * (widths + 2)) + (y0 + 1) * (widths + 2) + (x0 + 1)
            keys = keys.masked_fill_(~inside, 0)

        table = value.reshape(batch * num_value * num_heads, head_dim)
        output = F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")
        ctx.save_for_backward(table, index, weights, wx, wy, attention, valid, keys)
        ctx.sizes = (widths.to(dtype), heights.to(dtype), value.shape, sampling_locations.shape, shapes)
        return output.view(batch, num_queries, num_heads * head_dim).to(dtype)

    @staticmethod
    def backward(ctx, grad_output):
        table, index, weights, wx, wy, attention, valid, keys = ctx.saved_tensors
        widths, heights, value_shape, locations_shape, shapes = ctx.sizes
        rows = index.shape[0]
        grad_rows = grad_output.reshape(rows, -1).to(table.dtype).contiguous()
        grad_value = grad_locations = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_value = _table_gradient(keys, weights.view(valid.shape), grad_rows, shapes, value_shape)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dots = _gathered_dots(table, index, grad_rows).to(wx.dtype).view(valid.shape).masked_fill_(~valid, 0)
            if ctx.needs_input_grad[2]:
                grad_weights = (dots * (wy[:, :, None] * wx[:, None])).sum((1, 2)).view(locations_shape[:-1])
            if ctx.needs_input_grad[1]:
                dots.mul_(attention[:, None, None])
                grad_wx = (dots * wy[:, :, None]).sum(1)  # [N, 2, LP]
                grad_wy = (dots * wx[:, None]).sum(2)
                # x = ((2 loc - 1 + 1) w - 1) / 2: dx/dloc = w; d(left)/dx = -1, d(right)/dx = 1
                grad_x = (grad_wx[:, 1] - grad_wx[:, 0]) * widths
                grad_y = (grad_wy[:, 1] - grad_wy[:, 0]) * heights
                grad_locations = torch.stack([grad_x, grad_y], -1).view(locations_shape)
        return grad_value, grad_locations, grad_weights, None


def _level_starts(shapes: Sequence[tuple[int, int]]) -> list[int]:
    starts, total = [], 0
    for h, w in shapes:
        starts.append(total)
        total += h * w
    return starts


def ms_deform_attn_gather(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The ``"gather"`` backend: what :func:`ms_deform_attn_sampling` computes, as one weighted gather.

    Each sample reads the four neighbouring values of every level it samples; the bilinear weights (zero for
    neighbours outside the map), multiplied by the attention weight, become per-index weights of a single
    ``embedding_bag`` sum over ``L * P * 4`` indices per query and head. No ``[.., D, Q, P]`` intermediate per
    level, no stack and no separate multiply and sum. The backward pass (:class:`_DeformableGather`) is written
    out: the value gradient as a transposed gather, the location and attention-weight gradients from one dot
    product per neighbour. Coordinates follow ``grid_sample``'s (``align_corners=False``) arithmetic, so values
    agree with the reference to float rounding (float64: 1e-14).

    Arguments and result as for :func:`ms_deform_attn_sampling`. The values are gathered in ``value``'s dtype
    (bf16 under autocast), the weights computed in the promoted dtype of the locations and attention weights.
    """
    del level_start_index
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    return _DeformableGather.apply(value, sampling_locations, attention_weights, shapes)


def _native_call(library, name: str, tensors: Sequence[Tensor], sizes: Sequence[int], levels: Sequence[Tensor]):
    """Calls the kernel function ``name`` on contiguous CPU ``tensors``, the sizes ``(B, S, Q, M, D, L, P)``, the
    levels' ``[L, 2]`` sizes and ``[L]`` starts (int64), with torch's thread count."""
    pointers = [t.data_ptr() for t in (*tensors, *levels)]
    getattr(library, name)(*pointers[: len(tensors)], *sizes, *pointers[len(tensors) :], torch.get_num_threads())


class _NativeSampling(torch.autograd.Function):
    """The sampling by the C++ CPU kernel (``csrc/ms_deform_attn_cpu.cpp``): the forward reads each sample's four
    neighbours and adds them with their weights straight into the output row; the backward recomputes the
    neighbours and weights, and writes the value, location and attention-weight gradients in the same pass. It
    saves only its inputs. Computes in float64 for float64 inputs and in float32 otherwise; a bf16 value (under
    autocast) is read as bf16 and its gradient summed in float32. The output has the promoted dtype of the inputs,
    as for the other backends."""

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, shapes):
        library = _native_library(required=True)
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        if value.dtype == torch.bfloat16 and compute == torch.float32:
            suffix, value_c = "bf16", value.contiguous()
        else:
            suffix, value_c = ("f64" if compute == torch.float64 else "f32"), value.to(compute).contiguous()
        locations_c, weights_c = (t.to(compute).contiguous() for t in (sampling_locations, attention_weights))
        batch, num_value, num_heads, head_dim = value.shape
        _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
        sizes = (batch, num_value, num_queries, num_heads, head_dim, num_levels, num_points)
        # [L, 2] sizes and [L] start offsets, int64 (kept on ctx for the backward)
        ctx.levels = (torch.tensor(shapes, dtype=torch.int64), torch.tensor(_level_starts(shapes), dtype=torch.int64))
        output = locations_c.new_empty(batch, num_queries, num_heads * head_dim)
        _native_call(library, f"msda_forward_{suffix}", (value_c, locations_c, weights_c, output), sizes, ctx.levels)
        ctx.save_for_backward(value_c, locations_c, weights_c)
        ctx.meta = (sizes, suffix, value.dtype, sampling_locations.dtype, attention_weights.dtype)
        return output.to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, locations, weights = ctx.saved_tensors
        sizes, suffix, value_dtype, locations_dtype, weights_dtype = ctx.meta
        grad_output = grad_output.to(locations.dtype).contiguous()
        grad_value = torch.zeros(value.shape, dtype=locations.dtype)  # float32 for a bf16 value
        grad_locations, grad_weights = torch.empty_like(locations), torch.empty_like(weights)
        tensors = (value, locations, weights, grad_output, grad_value, grad_locations, grad_weights)
        _native_call(_native_library(required=True), f"msda_backward_{suffix}", tensors, sizes, ctx.levels)
        grads = (grad_value, grad_locations, grad_weights)
        return (*cast_input_grads(ctx.needs_input_grad, grads, (value_dtype, locations_dtype, weights_dtype)), None)


def cast_input_grads(needs: Sequence[bool], grads: Sequence[Tensor], dtypes: Sequence[torch.dtype]) -> tuple:
    """A kernel's gradients of the value, locations and attention weights (computed in float32 or float64) in
    their inputs' dtypes, ``None`` where autograd asks for none."""
    return tuple(grad.to(dtype) if need else None for need, grad, dtype in zip(needs, grads, dtypes))


NATIVE_KERNEL = "ms_deform_attn_cpu"
_NATIVE_ABI_VERSION = 2


def _native_library(required: bool = False):
    """The loaded C++ kernel (built on first use), or None when it is unavailable (``required``: raise)."""
    from . import native_kernels

    library = native_kernels.load_native_library(NATIVE_KERNEL, _NATIVE_ABI_VERSION)
    if library is not None and not hasattr(library, "_msda_typed"):
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        for suffix in ("f32", "f64", "bf16"):
            getattr(library, f"msda_forward_{suffix}").argtypes = (
                [pointer] * 4 + [size] * 7 + [pointer] * 2 + [ctypes.c_int]
            )
            getattr(library, f"msda_backward_{suffix}").argtypes = (
                [pointer] * 7 + [size] * 7 + [pointer] * 2 + [ctypes.c_int]
            )
        library._msda_typed = True
    if library is None and required:
        raise RuntimeError(
            "the 'native' deformable-attention backend needs its C++ kernel, which is unavailable: "
            f"{native_kernels.native_unavailable_reason(NATIVE_KERNEL)}. Select backend 'auto' (it falls back to "
            "the pure-PyTorch kernels) or 'gather'"
        )
    return library


def native_sampling_available() -> bool:
    """Whether the ``"native"`` backend can run here (builds its kernel on the first call)."""
    return _native_library() is not None


def ms_deform_attn_native(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The ``"native"`` backend: what :func:`ms_deform_attn_sampling` computes, by a C++ kernel for CPU tensors
    (:class:`_NativeSampling`), built with the system compiler on first use (:mod:`.native_kernels`). Per sample
    it does the work of the written-out bilinear formula and nothing more: no index or weight tensors, no sort in
    the backward. Values agree with the reference to float rounding (float64: 1e-15). Raises if the kernel is
    unavailable or the tensors are not on the CPU. Arguments and result as for :func:`ms_deform_attn_sampling`."""
    del level_start_index
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    if value.device.type != "cpu":
        raise ValueError(
            f"the 'native' deformable-attention backend runs on the CPU, got tensors on {value.device}; "
            "select backend 'auto' or 'gather'"
        )
    return _NativeSampling.apply(value, sampling_locations, attention_weights, shapes)


def ms_deform_attn_triton(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The ``"triton"`` backend: what :func:`ms_deform_attn_sampling` computes, by Triton kernels
    (:mod:`.triton_ms_deform_attn`) that read each sample's four neighbours and add them into the output in one
    pass, forward and backward (value gradient by atomic adds), accumulating in float32 (float64 for float64
    inputs). For CUDA tensors; on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
    Opt-in: ``"auto"`` does not select it until a GPU run has confirmed its speed. Arguments and result as for
    :func:`ms_deform_attn_sampling`."""
    del level_start_index
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    require_triton_tensors("'triton' deformable-attention backend", value, sampling_locations, attention_weights)
    from .triton_ms_deform_attn import TritonSampling

    return TritonSampling.apply(value, sampling_locations, attention_weights, shapes)


#: the narrowest heads for which the ``"auto"`` backend trains with ``"gather"`` when the native kernel is not
#: used. Measured on a 2-core CPU (one thread, forward + backward, 4 levels, 4 points, 8 heads; small maps of 1.2k
#: tokens, batch 4, and R50-sized maps of 7k tokens, batch 2), ``"gather"`` took 0.36x and 0.47x the reference's
#: time with 32-channel heads, 0.67x and 0.77x with 16-channel heads, but 1.24x and 1.27x with 8-channel heads: its
#: backward sorts the sampled positions, a cost that does not shrink with the channels
AUTO_GATHER_MIN_HEAD_DIM = 16


def ms_deform_attn_auto(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The ``"auto"`` backend: on the CPU the C++ kernel (:func:`ms_deform_attn_native`) when it is available;
    otherwise ``"gather"`` (:func:`ms_deform_attn_gather`) without gradients and for training with heads of at
    least :data:`AUTO_GATHER_MIN_HEAD_DIM` channels, and the reference (:func:`ms_deform_attn_sampling`) for
    training with narrower heads. All compute the same values to float rounding; arguments and result as for
    :func:`ms_deform_attn_sampling`."""
    if value.device.type == "cpu" and _native_library() is not None:
        kernel = ms_deform_attn_native
    else:
        needs_grad = torch.is_grad_enabled() and (
            value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad
        )
        narrow = value.shape[-1] < AUTO_GATHER_MIN_HEAD_DIM
        kernel = ms_deform_attn_sampling if needs_grad and narrow else ms_deform_attn_gather
    return kernel(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def ms_deform_attn_flops(value_shape: Sequence[int], locations_shape: Sequence[int]) -> int:
    """FLOPs of one sampling call: 5 per sampled value and channel (4 for the bilinear interpolation, 1 for the
    weighted sum over points and levels).

    Args:
        value_shape: ``(B, S, M, D)``.
        locations_shape: ``(B, Q, M, L, P, 2)``.
    """
    batch, _, heads, head_dim = value_shape
    _, queries, _, levels, points, _ = locations_shape
    return 5 * batch * queries * heads * head_dim * levels * points


class MSDeformAttnSampling(torch.autograd.Function):
    """The reference sampling as one autograd node: a trace shows it as ``prim::PythonOp.MSDeformAttnSampling``."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        del ctx
        return ms_deform_attn_sampling(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    def backward(ctx, grad_output):  # pragma: no cover - a counting backend, not for training
        raise NotImplementedError("the 'pytorch_single_op' sampling backend is for inference (FLOP counting) only")


#: the op name under which traces show the ``"pytorch_single_op"`` backend (for FLOP-counter handles)
SINGLE_OP_NAME = "prim::PythonOp.MSDeformAttnSampling"

#: sampling backends by name: functions with the signature of :func:`ms_deform_attn_sampling`
SAMPLING_BACKENDS: dict[str, Callable[..., Tensor]] = {
    "pytorch": ms_deform_attn_sampling,
    "pytorch_single_op": MSDeformAttnSampling.apply,
    "gather": ms_deform_attn_gather,
    "native": ms_deform_attn_native,
    "triton": ms_deform_attn_triton,
    "auto": ms_deform_attn_auto,
}


def register_sampling_backend(name: str, function: Callable[..., Tensor]) -> None:
    """Makes ``function`` (the signature of :func:`ms_deform_attn_sampling`) selectable as ``backend=name``."""
    if name in SAMPLING_BACKENDS and SAMPLING_BACKENDS[name] is not function:
        raise ValueError(f"sampling backend {name!r} is already registered")
    SAMPLING_BACKENDS[name] = function


def _check_backend(name: str) -> str:
    if name not in SAMPLING_BACKENDS:
        raise ValueError(
            f"unknown deformable-attention sampling backend {name!r}; registered: {sorted(SAMPLING_BACKENDS)}"
        )
    return name


def set_sampling_backend(model: nn.Module, name: str) -> contextlib.AbstractContextManager[list[nn.Module]]:
    """Within the ``with`` block, every :class:`MultiScaleDeformableAttention` of ``model`` uses backend ``name``
    (their own backends are restored on exit); yields the modules switched."""
    _check_backend(name)
    return module_attributes(model, "backend", name, applies=lambda m: isinstance(m, MultiScaleDeformableAttention))


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention with value/output projections.

    Parameters (shapes for ``E = embed_dim``, ``M = num_heads``, ``L = num_levels``, ``P = num_points``):
    ``sampling_offsets`` Linear(E, M*L*P*2), ``attention_weights`` Linear(E, M*L*P), ``value_proj`` and
    ``output_proj`` Linear(E, E). The output projection is applied, but no dropout and no residual (the
    caller's layer adds them).

    Args:
        embed_dim: channels of queries, values and output.
        num_heads: attention heads; ``embed_dim`` must be divisible by it.
        num_levels: feature levels of the value.
        num_points: sampling points per head and level.
        backend: the sampling kernel, a name of :data:`SAMPLING_BACKENDS` (``"pytorch"``: the reference).
    """

    #: the backend that defines the computation (exports and tests compare against it)
    reference_backend = "pytorch"
    #: the registry of the backends it can select
    backends = SAMPLING_BACKENDS

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        backend: str = "pytorch",
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.backend = _check_backend(backend)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}, backend={self.backend!r}"
        )

    def reset_parameters(self) -> None:
        """Zero offset weights with a bias fanning the points out per head; uniform attention; xavier projections.

        Head ``m`` points in direction ``angle = 2 * pi * m / M``, scaled so that the larger of ``|cos|``,
        ``|sin|`` is 1; point ``p`` (0-based) of every level sits ``p + 1`` times further along it.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1) * steps
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: SpatialShapes,
        level_start_index: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attends from each query to sampled locations of the multi-level value.

        Args:
            query: ``[B, Q, E]`` queries (position embedding already added by the caller).
            reference_points: ``[B, Q, L, 2]`` normalised ``(x, y)`` points, or ``[B, Q, L, 4]`` normalised
                ``(cx, cy, w, h)`` boxes, one per level (already scaled by the valid ratios if the caller wants).
                With points, offsets are in pixels of each level; with boxes, an offset of ``P`` spans half the
                box size.
            value: ``[B, S, E]`` flattened multi-level features, ``S = sum_l h_l * w_l``.
            spatial_shapes: ``[L, 2]`` long tensor (or a sequence) of ``(h_l, w_l)``.
            level_start_index: ``[L]`` start of each level in ``S`` (passed on to the sampling kernel).
            key_padding_mask: ``[B, S]`` bool, ``True`` on padded value positions (their values are zeroed).

        Returns:
            ``[B, Q, E]`` tensor, in the dtype of the projected value.
        """
        batch, num_queries, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value)
        # On the CPU in eager mode a mask without padding (a single image) is skipped: .any() needs no sync there;
        # a trace (ONNX export) keeps the masking, since the traced graph must serve inputs with padding too.
        eager_cpu = value.device.type == "cpu" and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
        if key_padding_mask is not None and (not eager_cpu or key_padding_mask.any()):
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, self.num_heads, self.embed_dim // self.num_heads)
        locations = self._sampling_locations(query, reference_points, spatial_shapes)
        weights = self.attention_weights(query).view(batch, num_queries, self.num_heads, -1).softmax(-1)
        weights = weights.view(batch, num_queries, self.num_heads, self.num_levels, self.num_points)
        output = SAMPLING_BACKENDS[self.backend](value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(output.to(value.dtype))

    def _sampling_locations(self, query: Tensor, reference_points: Tensor, spatial_shapes: SpatialShapes) -> Tensor:
        """Reference points/boxes plus predicted offsets: ``[B, Q, M, L, P, 2]`` normalised ``(x, y)``."""
        batch, num_queries, _ = query.shape
        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.num_heads, self.num_levels, self.num_points, 2
        )
        ref = reference_points[:, :, None, :, None, :]
        if reference_points.shape[-1] == 2:
            shapes = torch.as_tensor(spatial_shapes, device=query.device)
            normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], dim=-1)
            return ref + offsets / normalizer[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            return ref[..., :2] + offsets / self.num_points * ref[..., 2:] * 0.5
        raise ValueError(f"reference_points must end in 2 (points) or 4 (boxes), got shape {reference_points.shape}")
