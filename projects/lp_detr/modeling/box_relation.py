"""Pairwise box relations as self-attention biases: Relation DETR's position relation and LP-DETR's progressive,
multi-scale variant.

For boxes ``i`` of one set (``src``, normalised cxcywh) and ``j`` of another (``tgt``), the *local* relation
features are (``eps`` keeps them finite for degenerate boxes)::

    log(|x_i - x_j| / (w_i + eps) + 1),  log(|y_i - y_j| / (h_i + eps) + 1),
    log((w_i + eps) / (w_j + eps)),      log((h_i + eps) / (h_j + eps))

optionally followed by ``GIoU(box_i, box_j)`` (LP-DETR). Each feature is embedded with ``sine_dim`` sinusoidal
features (temperature 10000, scale 100, no x/y exchange); a 1x1 convolution (stored as ``Conv2d`` like the
official checkpoint, applied as a linear map over the embedding channels) and a ReLU give one bias per head,
``[B, num_heads, N_src, N_tgt]``. The features and their sine embedding carry no gradient (as in the official
implementation); the projection, and LP-DETR's mixing weights, do.

The ``[B, heads, N, N]`` relation dominates the decoder's memory for large query counts (1100 denoising + matching
queries: 64 embedding channels are ~300 MB per image in fp32). ``chunk_size`` computes it in blocks of source rows
(bounding the transient memory of the embedding), and ``checkpoint`` recomputes each block's embedding in the
backward pass instead of keeping it for the projection's gradient. Both give the same values as the direct
computation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from modeling.layers import get_sine_pos_embed

from .fused_relation import PairFeatureSpec, RelationTerms, fused_relation, triton_relation

__all__ = [
    "RELATION_BACKENDS",
    "BoxRelationEmbedding",
    "ProgressiveRelationEmbedding",
    "box_relation_features",
    "pairwise_giou",
    "pytorch_relation",
    "register_relation_backend",
]

RELATION_EPS = 1e-5


def pairwise_giou(src_boxes: Tensor, tgt_boxes: Tensor, eps: float = RELATION_EPS) -> Tensor:
    """Generalised IoU of every pair, finite for degenerate boxes.

    Args:
        src_boxes: ``[B, N1, 4]`` normalised cxcywh.
        tgt_boxes: ``[B, N2, 4]`` normalised cxcywh.
        eps: added to the union and the enclosing area.

    Returns:
        ``[B, N1, N2]`` in ``[-1, 1]``.
    """
    src_lo, src_hi = src_boxes[..., :2] - src_boxes[..., 2:] / 2, src_boxes[..., :2] + src_boxes[..., 2:] / 2
    tgt_lo, tgt_hi = tgt_boxes[..., :2] - tgt_boxes[..., 2:] / 2, tgt_boxes[..., :2] + tgt_boxes[..., 2:] / 2
    src_area = src_boxes[..., 2:].clamp(min=0).prod(-1)
    tgt_area = tgt_boxes[..., 2:].clamp(min=0).prod(-1)
    inter_wh = torch.minimum(src_hi[:, :, None], tgt_hi[:, None]) - torch.maximum(src_lo[:, :, None], tgt_lo[:, None])
    inter = inter_wh.clamp(min=0).prod(-1)
    union = src_area[:, :, None] + tgt_area[:, None] - inter
    hull_wh = torch.maximum(src_hi[:, :, None], tgt_hi[:, None]) - torch.minimum(src_lo[:, :, None], tgt_lo[:, None])
    hull = hull_wh.clamp(min=0).prod(-1)
    return inter / (union + eps) - (hull - union) / (hull + eps)


def box_relation_features(
    src_boxes: Tensor, tgt_boxes: Tensor, eps: float = RELATION_EPS, with_giou: bool = False
) -> Tensor:
    """Local relation features of every ``(src, tgt)`` pair (see the module docstring).

    Args:
        src_boxes: ``[B, N1, 4]`` normalised cxcywh (``i``: the offsets are normalised by these sizes).
        tgt_boxes: ``[B, N2, 4]`` normalised cxcywh (``j``).
        eps: keeps the divisions and logarithms finite.
        with_giou: append the pairwise GIoU as a fifth feature.

    Returns:
        ``[B, N1, N2, 4]`` (or ``5`` with ``with_giou``).
    """
    src_wh, tgt_wh = src_boxes[..., None, 2:], tgt_boxes[..., None, :, 2:]
    delta_wh = torch.log((src_wh + eps) / (tgt_wh + eps))
    features = [centre_offset_features(src_boxes, tgt_boxes, eps), delta_wh]
    if with_giou:
        features.append(pairwise_giou(src_boxes, tgt_boxes, eps)[..., None])
    return torch.cat(features, -1)


def centre_offset_features(
    src_boxes: Tensor, tgt_boxes: Tensor, eps: float = RELATION_EPS, factor: float = 1.0
) -> Tensor:
    """``[B, N1, N2, 2]`` centre-offset features ``log(|x_i - x_j| / (factor * (w_i + eps)) + 1)`` (and ``y``/``h``);
    ``factor`` is LP-DETR's medium-range scaling (1: the local features)."""
    src_xy, src_wh = src_boxes[..., None, :2], src_boxes[..., None, 2:]
    tgt_xy = tgt_boxes[..., None, :, :2]
    return torch.log(torch.abs(src_xy - tgt_xy) / (factor * (src_wh + eps)) + 1.0)


def pytorch_relation(module: BoxRelationEmbedding, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
    """The reference relation backend: ``[B, K, N1, N2]`` biases of the ``K`` relation heads, computed in blocks
    of ``module.chunk_size`` source boxes (each block recomputed in the backward pass with ``module.checkpoint``)."""
    chunk = module.chunk_size or max(src_boxes.shape[1], 1)
    blocks = []
    for src_block in src_boxes.split(chunk, dim=1):
        if module.checkpoint and torch.is_grad_enabled():
            blocks.append(activation_checkpoint(module.block, src_block, tgt_boxes, layer_idx, use_reentrant=False))
        else:
            blocks.append(module.block(src_block, tgt_boxes, layer_idx))
    return torch.cat(blocks, 1).permute(0, 3, 1, 2)


#: relation-bias backends by name: ``backend(module, src_boxes, tgt_boxes, layer_idx) -> [B, K, N1, N2]``
RELATION_BACKENDS: dict[str, Callable[..., Tensor]] = {
    "pytorch": pytorch_relation,
    "fused": fused_relation,
    "triton": triton_relation,
}


def register_relation_backend(name: str, function: Callable[..., Tensor]) -> None:
    """Makes ``function`` (the signature of :func:`pytorch_relation`) selectable as ``backend=name``."""
    if name in RELATION_BACKENDS and RELATION_BACKENDS[name] is not function:
        raise ValueError(f"relation backend {name!r} is already registered")
    RELATION_BACKENDS[name] = function


class BoxRelationEmbedding(nn.Module):
    """Relation DETR's position relation embedding: one attention bias per head from the local relation features.

    Args:
        num_heads: heads of the self-attention the bias is for.
        sine_dim: sine features per relation feature.
        temperature: temperature of the sine embedding.
        scale: multiplier of the features before the sine embedding.
        eps: see :func:`box_relation_features`.
        with_giou: add GIoU as a fifth feature (LP-DETR; the projection then has 5 * ``sine_dim`` inputs).
        num_relation_heads: the first ``K`` heads get a bias, the others zero (``None``: all heads).
        chunk_size: compute the relation in blocks of this many source boxes (``None``: at once).
        checkpoint: in training, recompute each block's embedding in the backward pass.
        backend: the kernel computing the biases, a name of :data:`RELATION_BACKENDS` (``"pytorch"``: the
            reference, :func:`pytorch_relation`; ``"fused"``: :func:`~.fused_relation.fused_relation`, which never
            holds the embedding and ignores ``chunk_size`` and ``checkpoint``; ``"triton"``:
            :func:`~.fused_relation.triton_relation`, the same on CUDA with the pairwise part in a Triton kernel).
    """

    #: the backend that defines the computation (exports and tests compare against it)
    reference_backend = "pytorch"
    #: the registry of the backends it can select
    backends = RELATION_BACKENDS

    def __init__(
        self,
        num_heads: int = 8,
        sine_dim: int = 16,
        temperature: float = 10000.0,
        scale: float = 100.0,
        eps: float = RELATION_EPS,
        with_giou: bool = False,
        num_relation_heads: int | None = None,
        chunk_size: int | None = None,
        checkpoint: bool = False,
        backend: str = "pytorch",
    ):
        super().__init__()
        if backend not in RELATION_BACKENDS:
            raise ValueError(f"unknown relation backend {backend!r}; registered: {sorted(RELATION_BACKENDS)}")
        self.backend = backend
        num_relation_heads = num_heads if num_relation_heads is None else num_relation_heads
        if not 0 <= num_relation_heads <= num_heads:
            raise ValueError(f"num_relation_heads must be in [0, {num_heads}], got {num_relation_heads}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be None or >= 1, got {chunk_size}")
        self.num_heads = num_heads
        self.num_relation_heads = num_relation_heads
        self.sine_dim = sine_dim
        self.temperature = temperature
        self.scale = scale
        self.eps = eps
        self.with_giou = with_giou
        self.num_features = 5 if with_giou else 4
        self.chunk_size = chunk_size
        self.checkpoint = checkpoint
        self.proj = (
            nn.Conv2d(self.num_features * sine_dim, num_relation_heads, kernel_size=1) if num_relation_heads else None
        )

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_relation_heads={self.num_relation_heads}, sine_dim={self.sine_dim}, "
            f"with_giou={self.with_giou}, chunk_size={self.chunk_size}, checkpoint={self.checkpoint}, "
            f"backend={self.backend!r}"
        )

    @property
    def enabled(self) -> bool:
        """Whether any head gets a bias (``num_relation_heads > 0``)."""
        return self.proj is not None

    def sine_embed(self, features: Tensor) -> Tensor:
        """``[..., F]`` relation features -> ``[..., F * sine_dim]`` sine embedding."""
        return get_sine_pos_embed(features, self.sine_dim, self.temperature, self.scale, exchange_xy=False)

    def embed(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """Embedding ``[B, N1, N2, F * sine_dim]`` the projection reads (here: of the local features)."""
        del layer_idx
        with torch.no_grad():
            return self.sine_embed(box_relation_features(src_boxes, tgt_boxes, self.eps, self.with_giou))

    def block(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """Per-head biases ``[B, N1, N2, K]`` of one block of source boxes."""
        embedding = self.embed(src_boxes, tgt_boxes, layer_idx)
        return F.relu(F.linear(embedding, self.proj.weight.flatten(1), self.proj.bias))

    def projection_weight(self) -> Tensor:
        """The projection as ``[K, F, H, 2]``: feature, frequency, sine/cosine channel."""
        return self.proj.weight.view(self.num_relation_heads, self.num_features, self.sine_dim // 2, 2)

    def pair_features(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """The features that are not differences of per-box terms, ``[B, N1, N2, P]``: the centre offsets (and
        GIoU); the fused backend embeds them block by block."""
        del layer_idx
        features = [centre_offset_features(src_boxes, tgt_boxes, self.eps)]
        if self.with_giou:
            features.append(pairwise_giou(src_boxes, tgt_boxes, self.eps)[..., None])
        return torch.cat(features, -1)

    def relation_terms(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> RelationTerms:
        """The relation split for the ``"fused"`` backend: the size ratios are separable, ``log(w_i + eps) -
        log(w_j + eps)``; the centre offsets (and GIoU) are pairwise."""
        weight = self.projection_weight()
        pair_index = [0, 1, 4] if self.with_giou else [0, 1]
        return RelationTerms(
            src_terms=torch.log(src_boxes[..., 2:] + self.eps),
            tgt_terms=torch.log(tgt_boxes[..., 2:] + self.eps),
            separable_weight=weight[:, 2:4],
            pair_features=lambda start, end: self.pair_features(src_boxes[:, start:end], tgt_boxes, layer_idx),
            pair_weight=weight[:, pair_index],
            bias=self.proj.bias,
            pair_spec=PairFeatureSpec(src_boxes, tgt_boxes, self.eps, ((1.0, 1.0),), self.with_giou),
        )

    def forward(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int = 0) -> Tensor:
        """Attention biases of every pair.

        Args:
            src_boxes: ``[B, N1, 4]`` normalised cxcywh (the earlier boxes; Relation DETR: the previous layer's).
            tgt_boxes: ``[B, N2, 4]`` normalised cxcywh (the later boxes).
            layer_idx: decoder layer that will use the bias (used by the progressive variant).

        Returns:
            ``[B, num_heads, N1, N2]``; heads ``>= num_relation_heads`` are zero.
        """
        if src_boxes.shape[-1] != 4 or tgt_boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be [B, N, 4], got {tuple(src_boxes.shape)} and {tuple(tgt_boxes.shape)}")
        batch, num_src, num_tgt = src_boxes.shape[0], src_boxes.shape[1], tgt_boxes.shape[1]
        if not self.enabled:
            return src_boxes.new_zeros(batch, self.num_heads, num_src, num_tgt)
        relation = RELATION_BACKENDS[self.backend](self, src_boxes.detach(), tgt_boxes.detach(), layer_idx)
        if self.num_relation_heads < self.num_heads:
            zeros = relation.new_zeros(batch, self.num_heads - self.num_relation_heads, num_src, num_tgt)
            relation = torch.cat([relation, zeros], 1)
        return relation.contiguous()


class ProgressiveRelationEmbedding(BoxRelationEmbedding):
    """LP-DETR's layer-wise progressive relation: local, medium and global relations mixed per decoder layer.

    For the decoder layer ``l`` (of ``L``) that receives the bias, the three relation embeddings are mixed with
    learnable weights ``Lambda[l] = (lambda_local, lambda_medium, lambda_global)`` (initialised to
    ``lambda_init``) before the shared projection:

    * *local*: the sine embedding of the local features (:func:`box_relation_features`);
    * *medium*: the same features flattened by the scaling factor ``s_l = 1 + 2 l / L``. With
      ``medium_form="distance"`` (default) the centre offsets are divided by ``s_l`` inside the logarithm,
      ``log(|dx| / (s_l (w_i + eps)) + 1)``, and the size ratios' logarithms by ``s_l``; with ``"log"`` every
      log-feature is divided by ``s_l``. GIoU is not scaled.
    * *global*: a constant relation, every feature equal to ``global_value`` (1.0): a learnt per-head constant.

    With ``normalize_lambda`` the weights of a layer are a softmax over the three scopes; otherwise they are used as
    they are. Row 0 of ``Lambda`` belongs to the first decoder layer, which has no relation (there are no earlier
    boxes), and stays unused; it is kept so that the table is ``[L, 3]``.

    ``Lambda[l] = (1, 0, 0)`` without GIoU and with all heads is Relation DETR's embedding.

    Args:
        num_layers: decoder layers ``L``.
        lambda_init: initial value of every mixing weight.
        normalize_lambda: softmax the weights of each layer over the three scopes.
        medium_form: ``"distance"`` or ``"log"`` (see above).
        global_value: the constant feature value of the global relation.
        with_giou: as for :class:`BoxRelationEmbedding` (on by default here).
        relation_args: the other arguments of :class:`BoxRelationEmbedding` (``num_heads``, ``sine_dim``,
            ``temperature``, ``scale``, ``eps``, ``num_relation_heads``, ``chunk_size``, ``checkpoint``,
            ``backend``).
    """

    MEDIUM_FORMS = ("distance", "log")

    def __init__(
        self,
        num_layers: int,
        lambda_init: float = 0.33,
        normalize_lambda: bool = False,
        medium_form: str = "distance",
        global_value: float = 1.0,
        with_giou: bool = True,
        **relation_args,
    ):
        super().__init__(with_giou=with_giou, **relation_args)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if medium_form not in self.MEDIUM_FORMS:
            raise ValueError(f"medium_form must be one of {self.MEDIUM_FORMS}, got {medium_form!r}")
        self.num_layers = num_layers
        self.normalize_lambda = normalize_lambda
        self.medium_form = medium_form
        self.global_value = global_value
        self.layer_weights = nn.Parameter(torch.full((num_layers, 3), float(lambda_init)))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_layers={self.num_layers}, normalize_lambda={self.normalize_lambda}, "
            f"medium_form={self.medium_form!r}"
        )

    def medium_scale(self, layer_idx: int) -> float:
        """``s_l = 1 + 2 l / L`` of decoder layer ``l``."""
        return 1.0 + 2.0 * layer_idx / self.num_layers

    def lambda_table(self) -> Tensor:
        """The effective mixing weights ``[L, 3]`` (local, medium, global) of every decoder layer (detached)."""
        return self._lambdas().detach().clone()

    def _lambdas(self) -> Tensor:
        return self.layer_weights.softmax(-1) if self.normalize_lambda else self.layer_weights

    def medium_features(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """The medium-range features ``[B, N1, N2, F]`` at decoder layer ``layer_idx``."""
        factor = self.medium_scale(layer_idx)
        eps = self.eps
        if self.medium_form == "log":
            features = box_relation_features(src_boxes, tgt_boxes, eps, with_giou=False) / factor
        else:
            src_wh, tgt_wh = src_boxes[..., None, 2:], tgt_boxes[..., None, :, 2:]
            delta_xy = centre_offset_features(src_boxes, tgt_boxes, eps, factor)
            delta_wh = torch.log((src_wh + eps) / (tgt_wh + eps)) / factor
            features = torch.cat([delta_xy, delta_wh], -1)
        if self.with_giou:
            features = torch.cat([features, pairwise_giou(src_boxes, tgt_boxes, eps)[..., None]], -1)
        return features

    def embed(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """``sum_s Lambda[l, s] * embedding_s`` over the local, medium and global scopes."""
        if not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"layer_idx {layer_idx} outside [0, {self.num_layers})")
        with torch.no_grad():
            local = self.sine_embed(box_relation_features(src_boxes, tgt_boxes, self.eps, self.with_giou))
            medium = self.sine_embed(self.medium_features(src_boxes, tgt_boxes, layer_idx))
            constant = src_boxes.new_full((self.num_features,), self.global_value)
            global_ = self.sine_embed(constant)
        weights = self._lambdas()[layer_idx]
        return weights[0] * local + weights[1] * medium + weights[2] * global_

    def pair_features(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> Tensor:
        """``[B, N1, N2, P]``: the local centre offsets, the medium ones, then GIoU (shared by both scopes)."""
        local = centre_offset_features(src_boxes, tgt_boxes, self.eps)
        if self.medium_form == "log":
            medium = local / self.medium_scale(layer_idx)
        else:
            medium = centre_offset_features(src_boxes, tgt_boxes, self.eps, self.medium_scale(layer_idx))
        features = [local, medium]
        if self.with_giou:
            features.append(pairwise_giou(src_boxes, tgt_boxes, self.eps)[..., None])
        return torch.cat(features, -1)

    def relation_terms(self, src_boxes: Tensor, tgt_boxes: Tensor, layer_idx: int) -> RelationTerms:
        """The mixed relation split for the ``"fused"`` backend. The projection is linear, so ``Lambda`` scales
        the weights instead of the embeddings: local and medium size ratios are separable terms (the medium ones
        divided by ``s_l``), local and medium centre offsets pairwise ones, GIoU (the same in both scopes) is
        weighted by ``lambda_local + lambda_medium``, and the global relation is a constant added to the bias."""
        if not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"layer_idx {layer_idx} outside [0, {self.num_layers})")
        lam_local, lam_medium, lam_global = self._lambdas()[layer_idx].unbind()
        factor = self.medium_scale(layer_idx)
        weight = self.projection_weight()
        src_log, tgt_log = torch.log(src_boxes[..., 2:] + self.eps), torch.log(tgt_boxes[..., 2:] + self.eps)
        pair_weight = [lam_local * weight[:, 0:2], lam_medium * weight[:, 0:2]]
        if self.with_giou:
            pair_weight.append((lam_local + lam_medium) * weight[:, 4:5])
        with torch.no_grad():
            constant = self.sine_embed(src_boxes.new_full((self.num_features,), self.global_value))
        # the medium centre offsets: (inside, outside) scalings of pair_features' formula
        medium = (1.0, factor) if self.medium_form == "log" else (factor, 1.0)
        return RelationTerms(
            src_terms=torch.cat([src_log, src_log / factor], -1),
            tgt_terms=torch.cat([tgt_log, tgt_log / factor], -1),
            separable_weight=torch.cat([lam_local * weight[:, 2:4], lam_medium * weight[:, 2:4]], 1),
            pair_features=lambda start, end: self.pair_features(src_boxes[:, start:end], tgt_boxes, layer_idx),
            pair_weight=torch.cat(pair_weight, 1),
            bias=self.proj.bias + lam_global * (self.proj.weight.flatten(1) @ constant.to(self.proj.weight.dtype)),
            pair_spec=PairFeatureSpec(src_boxes, tgt_boxes, self.eps, ((1.0, 1.0), medium), self.with_giou),
        )
