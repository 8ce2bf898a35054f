"""Triton kernels of multi-scale deformable attention sampling (the ``"triton"`` backend of :mod:`.ms_deform_attn`).

Imported on first use of the backend (it imports Triton). One program handles a block of queries of one
``(batch, head)`` pair and all ``D`` channels of the head:

* forward: for each level and point, the four neighbours of the sample are read as ``[BLOCK_Q, D]`` rows of the
  value and added, with their bilinear weight times the attention weight, into an accumulator; the output row is
  written once. Nothing else is stored.
* backward: the same pass recomputes the neighbours; the attention-weight gradient is the dot product of the
  output gradient with the sampled value, the location gradient that of the output gradient with the bilinear
  derivative, and the value gradient is added into a zeroed buffer with atomic adds (as the official CUDA kernel
  does: the order of the adds, hence the last bits of the value gradient, may differ between runs on a GPU).

Accumulation is in float32 (float64 for float64 inputs); float16/bfloat16 values are read in their own dtype. The
sampling arithmetic is ``grid_sample``'s (``align_corners=False``, zero padding), so values agree with the
reference backend to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .ms_deform_attn import cast_input_grads
from .triton_support import interpreting

__all__ = ["TritonSampling"]


@triton.jit
def _corner(value_base, start, xi, yi, h, w, row_stride, d, mask_q, mask_d, ACC: tl.constexpr):
    """The ``[BLOCK_Q, BLOCK_D]`` values at integer pixel ``(xi, yi)`` of a level (zeros outside it) and the
    validity of each query's corner."""
    valid = mask_q & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    index = tl.where(valid, start + yi * w + xi, 0)
    pointers = value_base + index[:, None] * row_stride + d[None, :]
    values = tl.load(pointers, mask=valid[:, None] & mask_d[None, :], other=0.0).to(ACC)
    return values, valid


@triton.jit
def _query_block(num_queries, M: tl.constexpr, D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch element, head, queries and channels (with their masks)."""
    b = tl.program_id(1) // M
    m = tl.program_id(1) % M
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    return b, m, q, d, q < num_queries, d < D


@triton.jit
def _neighbours(value_base, loc_ptr, weight_ptr, row, start, h, w, stride, d, mask_q, mask_d, ACC: tl.constexpr):
    """One sample per query: its attention weight, the fractional offsets ``(lx, ly)`` from its top-left
    neighbour ``(x0, y0)``, and the four neighbours' values and validities (``grid_sample``'s arithmetic)."""
    grid_x = 2.0 * tl.load(loc_ptr + row * 2, mask=mask_q, other=0.0).to(ACC) - 1.0
    grid_y = 2.0 * tl.load(loc_ptr + row * 2 + 1, mask=mask_q, other=0.0).to(ACC) - 1.0
    x = ((grid_x + 1.0) * w - 1.0) * 0.5
    y = ((grid_y + 1.0) * h - 1.0) * 0.5
    attention = tl.load(weight_ptr + row, mask=mask_q, other=0.0).to(ACC)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    v00, ok00 = _corner(value_base, start, x0, y0, h, w, stride, d, mask_q, mask_d, ACC)
    v10, ok10 = _corner(value_base, start, x0 + 1, y0, h, w, stride, d, mask_q, mask_d, ACC)
    v01, ok01 = _corner(value_base, start, x0, y0 + 1, h, w, stride, d, mask_q, mask_d, ACC)
    v11, ok11 = _corner(value_base, start, x0 + 1, y0 + 1, h, w, stride, d, mask_q, mask_d, ACC)
    return attention, x - x0f, y - y0f, x0, y0, v00, v10, v01, v11, ok00, ok10, ok01, ok11


@triton.jit
def _msda_forward(
    value_ptr,
    loc_ptr,
    weight_ptr,
    shapes_ptr,
    starts_ptr,
    out_ptr,
    num_queries,
    num_value,
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    b, m, q, d, mask_q, mask_d = _query_block(num_queries, M, D, BLOCK_Q, BLOCK_D)
    value_base = value_ptr + b * num_value * M * D + m * D
    rows = ((b * num_queries + q) * M + m) * (L * P)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    for level in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * level)
        w = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(P):
            row = rows + level * P + point
            attention, lx, ly, _, _, v00, v10, v01, v11, _, _, _, _ = _neighbours(
                value_base, loc_ptr, weight_ptr, row, start, h, w, M * D, d, mask_q, mask_d, ACC
            )
            top = v00 * (1.0 - lx)[:, None] + v10 * lx[:, None]
            bottom = v01 * (1.0 - lx)[:, None] + v11 * lx[:, None]
            sampled = top * (1.0 - ly)[:, None] + bottom * ly[:, None]
            acc += sampled * attention[:, None]
    out_pointers = out_ptr + ((b * num_queries + q) * M + m)[:, None] * D + d[None, :]
    tl.store(out_pointers, acc.to(out_ptr.dtype.element_ty), mask=mask_q[:, None] & mask_d[None, :])


@triton.jit
def _scatter_corner(grad_value_base, start, xi, yi, w, valid, row_stride, d, mask_d, contribution):
    index = tl.where(valid, start + yi * w + xi, 0)
    pointers = grad_value_base + index[:, None] * row_stride + d[None, :]
    tl.atomic_add(pointers, contribution, mask=valid[:, None] & mask_d[None, :])


@triton.jit
def _msda_backward(
    value_ptr,
    loc_ptr,
    weight_ptr,
    shapes_ptr,
    starts_ptr,
    grad_out_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_weight_ptr,
    num_queries,
    num_value,
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    b, m, q, d, mask_q, mask_d = _query_block(num_queries, M, D, BLOCK_Q, BLOCK_D)
    value_base = value_ptr + b * num_value * M * D + m * D
    grad_value_base = grad_value_ptr + b * num_value * M * D + m * D
    rows = ((b * num_queries + q) * M + m) * (L * P)
    grad_pointers = grad_out_ptr + ((b * num_queries + q) * M + m)[:, None] * D + d[None, :]
    grad = tl.load(grad_pointers, mask=mask_q[:, None] & mask_d[None, :], other=0.0).to(ACC)
    for level in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * level)
        w = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(P):
            row = rows + level * P + point
            attention, lx, ly, x0, y0, v00, v10, v01, v11, ok00, ok10, ok01, ok11 = _neighbours(
                value_base, loc_ptr, weight_ptr, row, start, h, w, M * D, d, mask_q, mask_d, ACC
            )
            hx = 1.0 - lx
            hy = 1.0 - ly
            sampled = (v00 * hx[:, None] + v10 * lx[:, None]) * hy[:, None] + (
                v01 * hx[:, None] + v11 * lx[:, None]
            ) * ly[:, None]
            tl.store(grad_weight_ptr + row, tl.sum(grad * sampled, axis=1), mask=mask_q)
            d_lx = (v10 - v00) * hy[:, None] + (v11 - v01) * ly[:, None]
            d_ly = (v01 - v00) * hx[:, None] + (v11 - v10) * lx[:, None]
            # d x / d location_x = w (and h for y)
            tl.store(grad_loc_ptr + row * 2, attention * w * tl.sum(grad * d_lx, axis=1), mask=mask_q)
            tl.store(grad_loc_ptr + row * 2 + 1, attention * h * tl.sum(grad * d_ly, axis=1), mask=mask_q)
            weighted = grad * attention[:, None]
            x1 = x0 + 1
            y1 = y0 + 1
            base = grad_value_base
            _scatter_corner(base, start, x0, y0, w, ok00, M * D, d, mask_d, weighted * (hx * hy)[:, None])
            _scatter_corner(base, start, x1, y0, w, ok10, M * D, d, mask_d, weighted * (lx * hy)[:, None])
            _scatter_corner(base, start, x0, y1, w, ok01, M * D, d, mask_d, weighted * (hx * ly)[:, None])
            _scatter_corner(base, start, x1, y1, w, ok11, M * D, d, mask_d, weighted * (lx * ly)[:, None])


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _launch_config(num_queries: int, head_dim: int) -> tuple[int, int, int]:
    """``(BLOCK_Q, BLOCK_D, num_warps)``. Under the interpreter one large block (each program is numpy calls, so
    fewer, larger programs run faster); on a GPU about 2k accumulator elements per program of 4 warps."""
    block_d = triton.next_power_of_2(head_dim)
    if interpreting():
        return min(256, triton.next_power_of_2(max(num_queries, 1))), block_d, 1
    block_q = max(16, min(128, 2048 // block_d))
    return block_q, block_d, 4


class TritonSampling(torch.autograd.Function):
    """The sampling by the Triton kernels above; arguments as :func:`.ms_deform_attn.ms_deform_attn_sampling`
    (``shapes``: the levels' ``(h, w)`` as a list). Saves only its inputs. The output has the promoted dtype of
    the three inputs; the gradients have their inputs' dtypes."""

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, shapes: Sequence[tuple[int, int]]):
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        # float16/bfloat16/float32 values are read in their own dtype; float64 inputs compute in float64
        value_c = (value.to(torch.float64) if compute == torch.float64 else value).contiguous()
        locations_c = sampling_locations.contiguous()
        weights_c = attention_weights.contiguous()
        batch, num_value, num_heads, head_dim = value.shape
        _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
        levels = torch.tensor(shapes, dtype=torch.int32, device=value.device).view(-1)
        starts = torch.tensor([0, *[h * w for h, w in shapes]][:-1], dtype=torch.int64).cumsum(0).to(torch.int32)
        starts = starts.to(value.device)
        output = value.new_empty(batch, num_queries, num_heads * head_dim, dtype=dtype)
        block_q, block_d, warps = _launch_config(num_queries, head_dim)
        grid = (triton.cdiv(num_queries, block_q), batch * num_heads)
        if output.numel():
            _msda_forward[grid](
                value_c, locations_c, weights_c, levels, starts, output, num_queries, num_value,
                M=num_heads, D=head_dim, L=num_levels, P=num_points, BLOCK_Q=block_q, BLOCK_D=block_d,
                ACC=_TL_DTYPES[compute], num_warps=warps,
            )  # fmt: skip
        ctx.save_for_backward(value_c, locations_c, weights_c, levels, starts)
        ctx.meta = (compute, value.dtype, sampling_locations.dtype, attention_weights.dtype)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, locations, weights, levels, starts = ctx.saved_tensors
        compute, value_dtype, locations_dtype, weights_dtype = ctx.meta
        batch, num_value, num_heads, head_dim = value.shape
        _, num_queries, _, num_levels, num_points, _ = locations.shape
        grad_output = grad_output.contiguous()
        grad_value = torch.zeros(value.shape, dtype=compute, device=value.device)
        grad_locations = torch.empty(locations.shape, dtype=compute, device=value.device)
        grad_weights = torch.empty(weights.shape, dtype=compute, device=value.device)
        block_q, block_d, warps = _launch_config(num_queries, head_dim)
        grid = (triton.cdiv(num_queries, block_q), batch * num_heads)
        if grad_output.numel():
            _msda_backward[grid](
                value, locations, weights, levels, starts, grad_output, grad_value, grad_locations, grad_weights,
                num_queries, num_value, M=num_heads, D=head_dim, L=num_levels, P=num_points, BLOCK_Q=block_q,
                BLOCK_D=block_d, ACC=_TL_DTYPES[compute], num_warps=warps,
            )  # fmt: skip
        grads = (grad_value, grad_locations, grad_weights)
        return (*cast_input_grads(ctx.needs_input_grad, grads, (value_dtype, locations_dtype, weights_dtype)), None)
