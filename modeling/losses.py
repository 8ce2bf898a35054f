"""Element-wise classification losses on sigmoid logits, shared by the set criterion and the salience loss.

Both losses follow the formulas of the official Salience DETR / Relation DETR code
(``models/bricks/losses.py``), which differ from ``torchvision.ops.sigmoid_focal_loss`` for soft targets:

* focal: ``BCE(x, t) * ((1 - alpha) * p**gamma * (1 - t) + alpha * t * (1 - p)**gamma)`` with ``p = sigmoid(x)``;
  the weight keeps its gradient. For binary targets this equals torchvision's focal loss; for soft targets
  ``t`` in (0, 1) (salience maps) it interpolates the two weights instead of using ``|t - p|``.
* IoU-aware varifocal (RT-DETR style): the positive target is the localisation quality ``q`` (IoU of the matched
  box), ``BCE(x, t * q)`` weighted by ``(1 - alpha) * p**gamma * (1 - t) + t * q`` where ``p`` is detached.
  ``alpha`` only scales negatives.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["normalised_sum", "reduce_loss", "sigmoid_focal_loss", "varifocal_loss"]

_REDUCTIONS = ("none", "sum", "mean")


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduces an element-wise loss.

    Args:
        loss: element-wise loss of any shape.
        reduction: ``"none"`` (unchanged), ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
        ``loss`` unchanged, or a scalar tensor.
    """
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def normalised_sum(loss: Tensor, normaliser: float | Tensor) -> Tensor:
    """Sum of an element-wise loss divided by ``normaliser``, in the official order of operations.

    Mathematically ``loss.sum() / normaliser``; computed as ``(loss.sum(1) / n).sum() / normaliser * n`` with
    ``n = max(loss.shape[1], 1)`` (mean over dimension 1, e.g. queries or pixels, then rescaled), which reproduces
    the official float32 values bit for bit.

    Args:
        loss: element-wise loss ``[B, N, ...]``.
        normaliser: positive number, e.g. the number of target boxes.

    Returns:
        Scalar tensor.
    """
    size = max(loss.shape[1], 1)
    return (loss.sum(1) / size).sum() / normaliser * size


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Focal loss on sigmoid logits, with the official Salience DETR weighting (see the module docstring).

    Args:
        inputs: logits of any shape ``[...]``.
        targets: targets of the same shape, binary or soft in ``[0, 1]``.
        alpha: weight of the positive term; ``1 - alpha`` weights the negative term.
        gamma: focusing exponent.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
        ``[...]`` element-wise loss, or a scalar for ``"sum"`` / ``"mean"``.
    """
    targets = targets.to(inputs.dtype)
    prob = inputs.sigmoid()
    negative_weight = (1 - alpha) * prob**gamma * (1 - targets)
    positive_weight = targets * alpha * (1 - prob) ** gamma
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return reduce_loss(loss * (negative_weight + positive_weight), reduction)


def varifocal_loss(
    inputs: Tensor,
    targets: Tensor,
    quality: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """IoU-aware varifocal loss on sigmoid logits (official ``vari_sigmoid_focal_loss``).

    Args:
        inputs: logits ``[..., C]``.
        targets: one-hot (binary) class targets ``[..., C]``; all-zero rows are background.
        quality: ``[...]`` localisation quality of each row in ``[0, 1]`` (IoU of the matched box, 0 when
            unmatched); it should carry no gradient.
        alpha: weight of the negative term.
        gamma: focusing exponent of the negative term (on the detached probability).
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
        ``[..., C]`` element-wise loss, or a scalar for ``"sum"`` / ``"mean"``.
    """
    targets = targets.to(inputs.dtype)
    prob = inputs.detach().sigmoid()
    target_score = targets * quality.to(inputs.dtype).unsqueeze(-1)
    weight = (1 - alpha) * prob.pow(gamma) * (1 - targets) + target_score
    loss = F.binary_cross_entropy_with_logits(inputs, target_score, weight=weight, reduction="none")
    return reduce_loss(loss, reduction)
