"""Triton kernels of the pairwise part of the relation bias (the ``"triton"`` relation backend).

Imported on first use of the backend (it imports Triton). One program handles a tile of ``BLOCK_I x BLOCK_J``
box pairs of one image and all ``K`` heads: it computes the pairwise features of :class:`.PairFeatureSpec` from
the boxes, their sine embedding one frequency at a time and its projection onto the heads, in registers. The
``[B, N1, N2, P * sine_dim]`` embedding is never stored, forward or backward:

* forward: the projection is added into the ``[B, K, N1, N2]`` output, which already holds the separable part
  (one matrix product, see :mod:`.fused_relation`);
* backward: each program writes its tile's share of the projection-weight gradient (``sum over pairs of
  grad[k] * embedding[c]``), ``[2, K, P * H]``; the shares are summed afterwards, so the result does not depend
  on the order in which programs run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from modeling.layers.triton_support import interpreting

from .fused_relation import PairFeatureSpec, PairwiseProjection

__all__ = ["TritonPairwiseProjection"]


@triton.jit
def _load_box(boxes_ptr, index, mask, ACC: tl.constexpr):
    cx = tl.load(boxes_ptr + index * 4, mask=mask, other=0.0).to(ACC)
    cy = tl.load(boxes_ptr + index * 4 + 1, mask=mask, other=0.0).to(ACC)
    w = tl.load(boxes_ptr + index * 4 + 2, mask=mask, other=1.0).to(ACC)
    h = tl.load(boxes_ptr + index * 4 + 3, mask=mask, other=1.0).to(ACC)
    return cx, cy, w, h


@triton.jit
def _pair_feature(feature: tl.constexpr, sx, sy, sw, sh, tx, ty, tw, th, scales_ptr, eps, NUM_SCALES: tl.constexpr):
    """Feature ``feature`` of :class:`PairFeatureSpec` for each pair (``s*``: source box, ``t*``: target box)."""
    if feature < 2 * NUM_SCALES:
        inside = tl.load(scales_ptr + 2 * (feature // 2))
        outside = tl.load(scales_ptr + 2 * (feature // 2) + 1)
        if feature % 2 == 0:
            value = tl.log(tl.abs(sx - tx) / (inside * (sw + eps)) + 1.0) / outside
        else:
            value = tl.log(tl.abs(sy - ty) / (inside * (sh + eps)) + 1.0) / outside
    else:
        # generalised IoU, as box_relation.pairwise_giou
        s_x0 = sx - sw / 2
        s_x1 = sx + sw / 2
        s_y0 = sy - sh / 2
        s_y1 = sy + sh / 2
        t_x0 = tx - tw / 2
        t_x1 = tx + tw / 2
        t_y0 = ty - th / 2
        t_y1 = ty + th / 2
        src_area = tl.maximum(sw, 0.0) * tl.maximum(sh, 0.0)
        tgt_area = tl.maximum(tw, 0.0) * tl.maximum(th, 0.0)
        inter_w = tl.maximum(tl.minimum(s_x1, t_x1) - tl.maximum(s_x0, t_x0), 0.0)
        inter_h = tl.maximum(tl.minimum(s_y1, t_y1) - tl.maximum(s_y0, t_y0), 0.0)
        inter = inter_w * inter_h
        union = src_area + tgt_area - inter
        hull_w = tl.maximum(tl.maximum(s_x1, t_x1) - tl.minimum(s_x0, t_x0), 0.0)
        hull_h = tl.maximum(tl.maximum(s_y1, t_y1) - tl.minimum(s_y0, t_y0), 0.0)
        hull = hull_w * hull_h
        value = inter / (union + eps) - (hull - union) / (hull + eps)
    return value


@triton.jit
def _tile(N1, N2, K: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    """This program's image ``b`` and tile of pairs ``(i, j)``, and the offsets ``[pairs, heads]`` of the tile in
    a ``[B, K, N1, N2]`` tensor with their mask."""
    b = tl.program_id(2)
    pairs = tl.arange(0, BLOCK_I * BLOCK_J)
    i = tl.program_id(0) * BLOCK_I + pairs // BLOCK_J
    j = tl.program_id(1) * BLOCK_J + pairs % BLOCK_J
    mask = (i < N1) & (j < N2)
    k = tl.arange(0, BLOCK_K)
    offsets = ((b * K + k[None, :]) * N1 + i[:, None]) * N2 + j[:, None]
    return b, i, j, mask, k, k < K, offsets, mask[:, None] & (k < K)[None, :]


@triton.jit
def _relation_pairwise_forward(
    out_ptr,
    src_ptr,
    tgt_ptr,
    weight_ptr,
    periods_ptr,
    scales_ptr,
    N1,
    N2,
    eps,
    scale,
    K: tl.constexpr,
    BLOCK_K: tl.constexpr,
    NUM_SCALES: tl.constexpr,
    P: tl.constexpr,
    H: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    ACC: tl.constexpr,
):
    b, i, j, mask, k, mask_k, offsets, both = _tile(N1, N2, K, BLOCK_I, BLOCK_J, BLOCK_K)
    sx, sy, sw, sh = _load_box(src_ptr, b * N1 + i, mask, ACC)
    tx, ty, tw, th = _load_box(tgt_ptr, b * N2 + j, mask, ACC)
    acc = tl.zeros([BLOCK_I * BLOCK_J, BLOCK_K], dtype=ACC)
    for feature in tl.static_range(P):
        value = _pair_feature(feature, sx, sy, sw, sh, tx, ty, tw, th, scales_ptr, eps, NUM_SCALES)
        for freq in tl.static_range(H):
            phase = value * scale / tl.load(periods_ptr + freq).to(ACC)
            column = feature * H + freq
            w_sin = tl.load(weight_ptr + k * (P * H) + column, mask=mask_k, other=0.0).to(ACC)
            w_cos = tl.load(weight_ptr + (K + k) * (P * H) + column, mask=mask_k, other=0.0).to(ACC)
            acc += tl.sin(phase)[:, None] * w_sin[None, :] + tl.cos(phase)[:, None] * w_cos[None, :]
    current = tl.load(out_ptr + offsets, mask=both, other=0.0).to(ACC)
    tl.store(out_ptr + offsets, (current + acc).to(out_ptr.dtype.element_ty), mask=both)


@triton.jit
def _relation_pairwise_weight_grad(
    grad_ptr,
    src_ptr,
    tgt_ptr,
    periods_ptr,
    scales_ptr,
    partial_ptr,
    N1,
    N2,
    eps,
    scale,
    K: tl.constexpr,
    BLOCK_K: tl.constexpr,
    NUM_SCALES: tl.constexpr,
    P: tl.constexpr,
    H: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    ACC: tl.constexpr,
):
    b, i, j, mask, k, mask_k, offsets, both = _tile(N1, N2, K, BLOCK_I, BLOCK_J, BLOCK_K)
    program = (b * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(0) + tl.program_id(0)
    sx, sy, sw, sh = _load_box(src_ptr, b * N1 + i, mask, ACC)
    tx, ty, tw, th = _load_box(tgt_ptr, b * N2 + j, mask, ACC)
    grad = tl.load(grad_ptr + offsets, mask=both, other=0.0).to(ACC)
    partial = partial_ptr + program * (2 * K * P * H)
    for feature in tl.static_range(P):
        value = _pair_feature(feature, sx, sy, sw, sh, tx, ty, tw, th, scales_ptr, eps, NUM_SCALES)
        for freq in tl.static_range(H):
            phase = value * scale / tl.load(periods_ptr + freq).to(ACC)
            column = feature * H + freq
            tl.store(partial + k * (P * H) + column, tl.sum(grad * tl.sin(phase)[:, None], axis=0), mask=mask_k)
            tl.store(partial + (K + k) * (P * H) + column, tl.sum(grad * tl.cos(phase)[:, None], axis=0), mask=mask_k)


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _launch_config() -> tuple[int, int, int]:
    """``(BLOCK_I, BLOCK_J, num_warps)``: one large tile per program under the interpreter (numpy calls); on a GPU
    16 x 16 pairs of 4 warps."""
    if interpreting():
        return 32, 64, 1
    return 16, 16, 4


class TritonPairwiseProjection(PairwiseProjection):
    """The pairwise part of :func:`.fused_relation.fused_relation_bias` by the Triton kernels above, for the
    features described by ``spec``; ``periods`` are the ``H`` sine periods, ``scale`` the feature multiplier."""

    def __init__(self, spec: PairFeatureSpec, scale: float, periods: Tensor, dtype: torch.dtype):
        if dtype not in _TL_DTYPES:
            raise TypeError(f"the 'triton' relation backend computes in float32 or float64, got {dtype}")
        self.src_boxes = spec.src_boxes.to(dtype).contiguous()
        self.tgt_boxes = spec.tgt_boxes.to(dtype).contiguous()
        self.scales = torch.tensor(spec.offset_scales, dtype=dtype, device=self.src_boxes.device).reshape(-1)
        self.num_scales, self.num_features = len(spec.offset_scales), spec.num_features
        self.eps, self.scale, self.dtype = float(spec.eps), float(scale), dtype
        self.periods = periods.to(dtype).contiguous()

    def _grid_and_args(self, heads: int):
        batch, num_src, num_tgt = self.src_boxes.shape[0], self.src_boxes.shape[1], self.tgt_boxes.shape[1]
        block_i, block_j, warps = _launch_config()
        grid = (triton.cdiv(num_src, block_i), triton.cdiv(num_tgt, block_j), batch)
        sizes = dict(
            K=heads, BLOCK_K=triton.next_power_of_2(heads), NUM_SCALES=self.num_scales, P=self.num_features,
            H=self.periods.numel(), BLOCK_I=block_i, BLOCK_J=block_j, ACC=_TL_DTYPES[self.dtype], num_warps=warps,
        )  # fmt: skip
        return grid, (num_src, num_tgt, self.eps, self.scale), sizes

    def add_(self, out: Tensor, pair_weight: Tensor) -> None:
        if not out.numel():
            return
        grid, scalars, sizes = self._grid_and_args(out.shape[1])
        weight = pair_weight.to(self.dtype).contiguous()
        _relation_pairwise_forward[grid](
            out, self.src_boxes, self.tgt_boxes, weight, self.periods, self.scales, *scalars, **sizes
        )

    def weight_grad(self, grad: Tensor, pair_weight: Tensor) -> Tensor:
        if not grad.numel():
            return torch.zeros_like(pair_weight)
        grid, scalars, sizes = self._grid_and_args(grad.shape[1])
        programs = grid[0] * grid[1] * grid[2]
        partial = grad.new_empty(programs, *pair_weight.shape, dtype=self.dtype)
        _relation_pairwise_weight_grad[grid](
            grad.contiguous(), self.src_boxes, self.tgt_boxes, self.periods, self.scales, partial, *scalars, **sizes
        )
        return partial.sum(0).to(pair_weight.dtype)
