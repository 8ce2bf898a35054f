"""The ``"fused"`` relation backend: the box-relation bias without the ``[B, N1, N2, F * sine_dim]`` embedding.

The bias of head ``h`` is ``relu(sum_c W[h, c] * E[i, j, c] + b[h])`` where ``E`` is the sine embedding of the
pairwise relation features. Two facts make most of it cheap:

* **Separable features.** A size-ratio feature is a difference of per-box terms, ``log(w_i + eps) - log(w_j +
  eps)``, so every phase is ``alpha_i - beta_j`` and ``sin(alpha_i - beta_j) = sin(alpha_i) cos(beta_j) -
  cos(alpha_i) sin(beta_j)`` (likewise for ``cos``). Their projected contribution is one matrix product per head,
  ``L [N1, 2S] @ R_h [2S, N2]``, with ``L`` the sines and cosines of the source terms and ``R_h`` those of the
  target terms mixed with the projection weights. Nothing of size ``N1 * N2 * S`` exists.
* **Pairwise features** (centre offsets, GIoU) are not separable. They are embedded in blocks of source rows,
  projected block by block into the output, and recomputed block by block in the backward pass, which needs
  them only for the projection's gradient (the features carry no gradient).

A relation module describes itself to this backend with ``relation_terms(src, tgt, layer_idx)``
(:class:`RelationTerms`): the separable per-box terms, a function giving the pairwise features of a block of
rows, and the projection weights that multiply each (mixing weights such as LP-DETR's ``Lambda`` folded in, so
that autograd carries their gradients). The output equals the reference backend's up to float rounding; the
separable phases are differences of per-box phases instead of phases of differences, which moves them by a few
ulps of the phase (the per-box terms are centred per batch element to keep those phases small).

Peak memory: the output, its gradient, the masked gradient, and one block of the pairwise embedding
(``block_elements`` values), instead of the whole embedding and its intermediates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from modeling.layers import sine_frequencies

__all__ = ["RelationTerms", "fused_relation", "fused_relation_bias"]

#: values of the pairwise sine embedding held at once (per block of source rows), about 16 MiB in float32
BLOCK_ELEMENTS = 1 << 22


@dataclass
class RelationTerms:
    """A relation bias split for the fused backend (``S`` separable features, ``P`` pairwise features,
    ``H = sine_dim / 2`` frequencies, ``K`` heads).

    Attributes:
        src_terms: ``[B, N1, S]`` per-source terms ``a_i`` of the separable features ``a_i - c_j``.
        tgt_terms: ``[B, N2, S]`` per-target terms ``c_j``.
        separable_weight: ``[K, S, H, 2]`` projection weights of the separable features (``[..., 0]`` on the
            sine, ``[..., 1]`` on the cosine channel of each frequency).
        pair_features: ``(start, end) -> [B, end - start, N2, P]`` pairwise features of source rows
            ``start:end`` (no gradient).
        pair_weight: ``[K, P, H, 2]`` projection weights of the pairwise features.
        bias: ``[K]`` constant term (the projection's bias and any constant embedding).
    """

    src_terms: Tensor
    tgt_terms: Tensor
    separable_weight: Tensor
    pair_features: Callable[[int, int], Tensor]
    pair_weight: Tensor
    bias: Tensor


def _phases(values: Tensor, scale: float, periods: Tensor) -> Tensor:
    """``[..., F]`` -> ``[..., F, H]`` phases, computed in the reference embedding's order of operations."""
    return values[..., None] * scale / periods


class _FusedRelationBias(torch.autograd.Function):
    """``relu(L @ R^T + pairwise block projections + bias)``; the backward pass recomputes the pairwise blocks."""

    @staticmethod
    def forward(ctx, left, right, pair_weight, bias, pair_phases, num_src, rows_per_block):
        # left [B, N1, 2S]; right [B, K, N2, 2S]; pair_weight [2, K, P * H] (on the sines, on the cosines)
        out = torch.matmul(left[:, None], right.transpose(-1, -2))  # [B, K, N1, N2]
        batch, heads, _, num_tgt = out.shape
        if pair_weight.shape[-1]:
            weights = pair_weight[:, None].expand(-1, batch, -1, -1)  # [2, B, K, P * H]
            for start in range(0, num_src, rows_per_block):
                end = min(start + rows_per_block, num_src)
                embedding = _pair_embedding(pair_phases(start, end))  # [2, B, c * N2, P * H]
                rows = out[:, :, start:end].view(batch, heads, (end - start) * num_tgt)
                for weight, part in zip(weights, embedding):
                    rows.baddbmm_(weight, part.transpose(1, 2))
        out += bias.view(1, -1, 1, 1)
        out.relu_()
        ctx.save_for_backward(left, out, pair_weight)
        ctx.pair_phases, ctx.num_src, ctx.rows_per_block = pair_phases, num_src, rows_per_block
        return out

    @staticmethod
    def backward(ctx, grad_out):
        left, out, pair_weight = ctx.saved_tensors
        # the ReLU's backward in one pass (a masked_fill would first copy grad_out, then build the mask)
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0)
        batch, heads, _, num_tgt = grad.shape
        grad_right = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_right = torch.matmul(grad.transpose(-1, -2), left[:, None])  # [B, K, N2, 2S]
        if ctx.needs_input_grad[2] and pair_weight.shape[-1]:
            grad_weight = torch.zeros_like(pair_weight)
            for start in range(0, ctx.num_src, ctx.rows_per_block):
                end = min(start + ctx.rows_per_block, ctx.num_src)
                embedding = _pair_embedding(ctx.pair_phases(start, end))
                rows = grad[:, :, start:end].reshape(batch, heads, (end - start) * num_tgt)
                for grad_part, part in zip(grad_weight, embedding):
                    grad_part += torch.bmm(rows, part).sum(0)
        if ctx.needs_input_grad[3]:
            grad_bias = grad.sum((0, 2, 3))
        return None, grad_right, grad_weight, grad_bias, None, None, None


def _pair_embedding(phases: Tensor) -> Tensor:
    """``[B, c, N2, P, H]`` phases -> ``[2, B, c * N2, P * H]``: the sines, then the cosines (each contiguous:
    sin/cos written into a strided half of a ``[..., 2, P * H]`` buffer run about 2x slower on the CPU)."""
    batch, rows, num_tgt, features, freqs = phases.shape
    flat = phases.reshape(batch, rows * num_tgt, features * freqs)
    embedding = flat.new_empty(2, batch, rows * num_tgt, features * freqs)
    torch.sin(flat, out=embedding[0])
    torch.cos(flat, out=embedding[1])
    return embedding


def fused_relation_bias(
    terms: RelationTerms, scale: float, temperature: float, sine_dim: int, block_elements: int | None = None
) -> Tensor:
    """Per-head biases ``[B, K, N1, N2]`` from the split relation ``terms`` (see the module docstring).

    Args:
        terms: the relation, split into separable and pairwise features.
        scale: multiplier of the features before the sine embedding.
        temperature: temperature of the sine embedding.
        sine_dim: sine features per relation feature (``2 H``).
        block_elements: pairwise embedding values computed at once (bounds the transient memory; default
            :data:`BLOCK_ELEMENTS`).
    """
    dtype = torch.promote_types(terms.src_terms.dtype, terms.separable_weight.dtype)
    periods = sine_frequencies(sine_dim, temperature, terms.src_terms.device, torch.promote_types(dtype, torch.float32))
    periods = periods[0::2].to(dtype)
    heads = terms.separable_weight.shape[0]
    batch, num_src = terms.src_terms.shape[:2]
    num_tgt = terms.tgt_terms.shape[1]

    # separable part: centring the per-box terms keeps their phases (and the rounding of sin/cos) small
    src_terms, tgt_terms = terms.src_terms.to(dtype), terms.tgt_terms.to(dtype)
    centre = torch.cat([src_terms, tgt_terms], 1).mean(1, keepdim=True) if num_src + num_tgt else 0.0
    alpha = _phases(src_terms - centre, scale, periods).flatten(-2)  # [B, N1, S * H]
    beta = _phases(tgt_terms - centre, scale, periods).flatten(-2)  # [B, N2, S * H]
    left = torch.cat([alpha.sin(), alpha.cos()], -1)
    cos_b, sin_b = beta.cos()[:, None], beta.sin()[:, None]  # [B, 1, N2, S * H]
    w_sin = terms.separable_weight[..., 0].to(dtype).flatten(1)[None, :, None]  # [1, K, 1, S * H]
    w_cos = terms.separable_weight[..., 1].to(dtype).flatten(1)[None, :, None]
    right = torch.cat([w_sin * cos_b + w_cos * sin_b, w_cos * cos_b - w_sin * sin_b], -1)  # [B, K, N2, 2 S H]

    pair_weight = terms.pair_weight.to(dtype)
    pair_weight = torch.stack([pair_weight[..., 0].flatten(1), pair_weight[..., 1].flatten(1)])  # [2, K, P H]
    per_row = max(batch * num_tgt * 2 * pair_weight.shape[-1], 1)
    rows_per_block = max(1, min(num_src, (block_elements or BLOCK_ELEMENTS) // per_row))

    def pair_phases(start: int, end: int) -> Tensor:
        return _phases(terms.pair_features(start, end).to(dtype), scale, periods)

    return _FusedRelationBias.apply(
        left, right, pair_weight, terms.bias.to(dtype), pair_phases, num_src, rows_per_block
    ).view(batch, heads, num_src, num_tgt)


def fused_relation(module, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
    """The ``"fused"`` relation backend (signature of ``pytorch_relation``): ``[B, K, N1, N2]``."""
    device_type = src_boxes.device.type
    with torch.autocast(device_type, enabled=False):
        terms = module.relation_terms(src_boxes, tgt_boxes, layer_idx)
        return fused_relation_bias(terms, module.scale, module.temperature, module.sine_dim)
