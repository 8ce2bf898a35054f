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

The ``"triton"`` backend (:func:`triton_relation`) shares all of this but the pairwise part: a
:class:`PairwiseProjection` is how that part is added into the output and how its weights' gradient is computed;
the Triton one (``triton_relation_kernels.py``) computes the features from their formula
(:class:`PairFeatureSpec`) in tiles of pairs, so not even one block of the embedding is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from modeling.layers import sine_frequencies

__all__ = [
    "PairFeatureSpec",
    "PairwiseProjection",
    "RelationTerms",
    "blocked_pairwise",
    "fused_relation",
    "fused_relation_bias",
    "triton_pairwise",
    "triton_relation",
]

#: values of the pairwise sine embedding held at once (per block of source rows), about 16 MiB in float32
BLOCK_ELEMENTS = 1 << 22


@dataclass
class PairFeatureSpec:
    """The pairwise features of a relation described by their formula, for kernels that compute them from the
    boxes themselves (the ``"triton"`` backend) instead of calling :attr:`RelationTerms.pair_features`.

    The features are, in this order: for each ``(inside, outside)`` of ``offset_scales``, the centre offsets
    ``log(|x_i - x_j| / (inside * (w_i + eps)) + 1) / outside`` and the same for ``y``/``h``; then, with
    ``with_giou``, the pairwise GIoU (``pairwise_giou`` of ``box_relation``).

    Attributes:
        src_boxes: ``[B, N1, 4]`` normalised cxcywh.
        tgt_boxes: ``[B, N2, 4]`` normalised cxcywh.
        eps: as in the relation features.
        offset_scales: ``(inside, outside)`` per pair of centre-offset features.
        with_giou: whether GIoU is the last feature.
    """

    src_boxes: Tensor
    tgt_boxes: Tensor
    eps: float
    offset_scales: tuple[tuple[float, float], ...]
    with_giou: bool

    @property
    def num_features(self) -> int:
        return 2 * len(self.offset_scales) + int(self.with_giou)


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
        pair_spec: the same pairwise features as a formula (:class:`PairFeatureSpec`), for kernels that compute
            them themselves; ``None`` where the relation has no such description.
    """

    src_terms: Tensor
    tgt_terms: Tensor
    separable_weight: Tensor
    pair_features: Callable[[int, int], Tensor]
    pair_weight: Tensor
    bias: Tensor
    pair_spec: PairFeatureSpec | None = None


def _phases(values: Tensor, scale: float, periods: Tensor) -> Tensor:
    """``[..., F]`` -> ``[..., F, H]`` phases, computed in the reference embedding's order of operations."""
    return values[..., None] * scale / periods


class PairwiseProjection:
    """How the pairwise part of the bias is computed: its projection added into the output, and the gradient of
    its projection weights. This one embeds blocks of source rows with PyTorch ops (any device); the Triton
    backend supplies another that computes features, embedding and projection in one kernel.

    Args:
        pair_phases: ``(start, end) -> [B, end - start, N2, P, H]`` phases of source rows ``start:end``.
        num_src: ``N1``.
        rows_per_block: source rows embedded at once.
    """

    def __init__(self, pair_phases: Callable[[int, int], Tensor], num_src: int, rows_per_block: int):
        self.pair_phases, self.num_src, self.rows_per_block = pair_phases, num_src, rows_per_block

    def _blocks(self):
        for start in range(0, self.num_src, self.rows_per_block):
            end = min(start + self.rows_per_block, self.num_src)
            yield start, end, _pair_embedding(self.pair_phases(start, end))  # [2, B, c * N2, P * H]

    def add_(self, out: Tensor, pair_weight: Tensor) -> None:
        """``out [B, K, N1, N2] += projection of the pairwise embedding``; ``pair_weight`` ``[2, K, P * H]``."""
        batch, heads, _, num_tgt = out.shape
        weights = pair_weight[:, None].expand(-1, batch, -1, -1)  # [2, B, K, P * H]
        for start, end, embedding in self._blocks():
            rows = out[:, :, start:end].view(batch, heads, (end - start) * num_tgt)
            for weight, part in zip(weights, embedding):
                rows.baddbmm_(weight, part.transpose(1, 2))

    def weight_grad(self, grad: Tensor, pair_weight: Tensor) -> Tensor:
        """The gradient ``[2, K, P * H]`` of ``pair_weight`` for the output gradient ``grad`` (ReLU applied)."""
        batch, heads, _, num_tgt = grad.shape
        grad_weight = torch.zeros_like(pair_weight)
        for start, end, embedding in self._blocks():
            rows = grad[:, :, start:end].reshape(batch, heads, (end - start) * num_tgt)
            for grad_part, part in zip(grad_weight, embedding):
                grad_part += torch.bmm(rows, part).sum(0)
        return grad_weight


class _FusedRelationBias(torch.autograd.Function):
    """``relu(L @ R^T + pairwise projection + bias)``; the backward pass recomputes the pairwise part."""

    @staticmethod
    def forward(ctx, left, right, pair_weight, bias, pairwise: PairwiseProjection):
        # left [B, N1, 2S]; right [B, K, N2, 2S]; pair_weight [2, K, P * H] (on the sines, on the cosines)
        out = torch.matmul(left[:, None], right.transpose(-1, -2))  # [B, K, N1, N2]
        if pair_weight.shape[-1]:
            pairwise.add_(out, pair_weight)
        out += bias.view(1, -1, 1, 1)
        out.relu_()
        ctx.save_for_backward(left, out, pair_weight)
        ctx.pairwise = pairwise
        return out

    @staticmethod
    def backward(ctx, grad_out):
        left, out, pair_weight = ctx.saved_tensors
        # the ReLU's backward in one pass (a masked_fill would first copy grad_out, then build the mask)
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_right = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_right = torch.matmul(grad.transpose(-1, -2), left[:, None])  # [B, K, N2, 2S]
        if ctx.needs_input_grad[2] and pair_weight.shape[-1]:
            grad_weight = ctx.pairwise.weight_grad(grad, pair_weight)
        if ctx.needs_input_grad[3]:
            grad_bias = grad.sum((0, 2, 3))
        return None, grad_right, grad_weight, grad_bias, None


def _pair_embedding(phases: Tensor) -> Tensor:
    """``[B, c, N2, P, H]`` phases -> ``[2, B, c * N2, P * H]``: the sines, then the cosines (each contiguous:
    sin/cos written into a strided half of a ``[..., 2, P * H]`` buffer run about 2x slower on the CPU)."""
    batch, rows, num_tgt, features, freqs = phases.shape
    flat = phases.reshape(batch, rows * num_tgt, features * freqs)
    embedding = flat.new_empty(2, batch, rows * num_tgt, features * freqs)
    torch.sin(flat, out=embedding[0])
    torch.cos(flat, out=embedding[1])
    return embedding


#: ``(terms, scale, periods [H], dtype, block_elements) -> PairwiseProjection``
PairwiseFactory = Callable[[RelationTerms, float, Tensor, torch.dtype, int], PairwiseProjection]


def blocked_pairwise(
    terms: RelationTerms, scale: float, periods: Tensor, dtype: torch.dtype, block_elements: int
) -> PairwiseProjection:
    """The PyTorch pairwise projection of ``terms``, in blocks of source rows of about ``block_elements``
    embedding values."""
    batch, num_src = terms.src_terms.shape[:2]
    _, num_pair, freqs, _ = terms.pair_weight.shape  # [K, P, H, 2]
    per_row = max(batch * terms.tgt_terms.shape[1] * 2 * num_pair * freqs, 1)
    rows_per_block = max(1, min(num_src, block_elements // per_row))

    def pair_phases(start: int, end: int) -> Tensor:
        return _phases(terms.pair_features(start, end).to(dtype), scale, periods)

    return PairwiseProjection(pair_phases, num_src, rows_per_block)


def fused_relation_bias(
    terms: RelationTerms,
    scale: float,
    temperature: float,
    sine_dim: int,
    block_elements: int | None = None,
    pairwise: PairwiseFactory = blocked_pairwise,
) -> Tensor:
    """Per-head biases ``[B, K, N1, N2]`` from the split relation ``terms`` (see the module docstring).

    Args:
        terms: the relation, split into separable and pairwise features.
        scale: multiplier of the features before the sine embedding.
        temperature: temperature of the sine embedding.
        sine_dim: sine features per relation feature (``2 H``).
        block_elements: pairwise embedding values computed at once (bounds the transient memory; default
            :data:`BLOCK_ELEMENTS`).
        pairwise: builds the computation of the pairwise part (default: PyTorch ops in blocks of rows).
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
    projection = pairwise(terms, scale, periods, dtype, block_elements or BLOCK_ELEMENTS)
    return _FusedRelationBias.apply(left, right, pair_weight, terms.bias.to(dtype), projection).view(
        batch, heads, num_src, num_tgt
    )


def fused_relation(module, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
    """The ``"fused"`` relation backend (signature of ``pytorch_relation``): ``[B, K, N1, N2]``."""
    device_type = src_boxes.device.type
    with torch.autocast(device_type, enabled=False):
        terms = module.relation_terms(src_boxes, tgt_boxes, layer_idx)
        return fused_relation_bias(terms, module.scale, module.temperature, module.sine_dim)


def triton_pairwise(
    terms: RelationTerms, scale: float, periods: Tensor, dtype: torch.dtype, block_elements: int
) -> PairwiseProjection:
    """The Triton pairwise projection of ``terms`` (features computed in the kernel from ``terms.pair_spec``)."""
    del block_elements
    if terms.pair_spec is None:
        raise ValueError(
            "the 'triton' relation backend computes the pairwise features from their formula, which this relation "
            "module does not give (RelationTerms.pair_spec is None); select backend 'fused' or 'pytorch'"
        )
    from .triton_relation_kernels import TritonPairwiseProjection

    return TritonPairwiseProjection(terms.pair_spec, scale, periods, dtype)


def triton_relation(module, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
    """The ``"triton"`` relation backend (signature of ``pytorch_relation``): ``[B, K, N1, N2]`` as
    :func:`fused_relation`, with the pairwise features, their sine embedding and projection computed tile by tile
    in a Triton kernel (:mod:`.triton_relation_kernels`) instead of in blocks of PyTorch ops. For CUDA tensors;
    on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests). Opt-in: no config selects it
    until a GPU run has confirmed its speed."""
    from modeling.layers.triton_support import require_triton_tensors

    require_triton_tensors("'triton' relation backend", src_boxes, tgt_boxes)
    with torch.autocast(src_boxes.device.type, enabled=False):
        terms = module.relation_terms(src_boxes, tgt_boxes, layer_idx)
        return fused_relation_bias(terms, module.scale, module.temperature, module.sine_dim, pairwise=triton_pairwise)
