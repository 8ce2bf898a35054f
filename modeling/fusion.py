"""Inference folding: per-channel affine norms merged into the convolution before them, re-parameterised blocks.

In eval mode a batch norm (``nn.BatchNorm2d``/``nn.SyncBatchNorm`` with running statistics, or torchvision's
``FrozenBatchNorm2d``) is the per-channel affine map ``y = x * s + t`` with ``s = weight / sqrt(running_var + eps)``
and ``t = bias - running_mean * s``. After a convolution ``x = W * z + b`` it folds into that convolution:
``W' = W * s`` (per output channel) and ``b' = b * s + t``. :func:`fuse_for_inference` does that for every
convolution-norm pair of a model whose data flow it knows, and calls ``reparameterize()`` on every module that has
one (RepVGG-style blocks, which merge their parallel branches into one convolution, e.g. Salience DETR's
``RepVGGPluXBlock``). The outputs are the same up to float rounding; the model is faster and has fewer modules.

Which pairs are folded:

* in a plain ``nn.Sequential`` (its ``forward`` not overridden), a ``nn.Conv2d`` directly followed by a foldable
  norm (torchvision's ``Conv2dNormActivation`` is one, so is the ``downsample`` of a ResNet block);
* the sibling pairs registered for a module class in :data:`CONV_NORM_PAIRS` (:func:`register_conv_norm_pairs`):
  torchvision's ``BasicBlock``/``Bottleneck`` (``conv1``/``bn1`` ...) and the stems of :class:`ResNetBackbone` and
  :class:`BasicResNet` (``conv1``, a convolution or a ``Sequential`` ending in one, then ``bn1``).

A norm is foldable only if its type is exactly one of :data:`FOLDABLE_NORMS` (a subclass may add an activation,
as timm's ``BatchNormAct2d`` does) and it uses running statistics. Other norms (GroupNorm, LayerNorm) are left.
A folded norm becomes ``nn.Identity``, so the indices of a ``Sequential`` and the module names stay the same.

Fusing is for inference only: it raises on a model in training mode, and a fused model raises when run in training
mode (the batch norms that would have used batch statistics are gone). The fused model's ``state_dict`` has new
biases and lacks the norms' keys: load a checkpoint first, then fuse.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

from .backbones import BasicResNet, ResNetBackbone

__all__ = [
    "CONV_NORM_PAIRS",
    "FOLDABLE_NORMS",
    "FusedForInferenceError",
    "conv_norm_kernel",
    "fold_conv_norm",
    "fold_conv_norms",
    "fuse_for_inference",
    "is_foldable_norm",
    "is_fused_for_inference",
    "merge_parallel_convs",
    "register_conv_norm_pairs",
]

logger = logging.getLogger(__name__)

#: norm types folded into the convolution before them (exact types: a subclass may compute something else)
FOLDABLE_NORMS: tuple[type[nn.Module], ...] = (FrozenBatchNorm2d, nn.BatchNorm2d, nn.SyncBatchNorm)

#: ``module class -> ((conv attribute, norm attribute), ...)``: sibling pairs where the module's forward applies the
#: norm directly (and only) to the convolution's output; the conv attribute may be a ``Sequential`` ending in a conv
CONV_NORM_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ResNetBackbone: (("conv1", "bn1"),),
    BasicResNet: (("conv1", "bn1"),),
}

_FUSED_FLAG = "_fused_for_inference"


class FusedForInferenceError(RuntimeError):
    """A model fused for inference was asked to train, or a model in training mode was asked to fuse."""


def register_conv_norm_pairs(cls: type[nn.Module], pairs: Sequence[tuple[str, str]]) -> None:
    """Declares that ``cls``'s forward applies ``norm`` directly to ``conv``'s output, for each ``(conv, norm)``.

    The declaration is for that exact class (a subclass may have another forward).
    """
    CONV_NORM_PAIRS[cls] = tuple((str(conv), str(norm)) for conv, norm in pairs)


def is_foldable_norm(module: nn.Module | None) -> bool:
    """Whether ``module`` is an eval-mode per-channel affine norm that can be folded into a convolution."""
    if type(module) not in FOLDABLE_NORMS:
        return False
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return module.running_mean is not None and module.running_var is not None  # else batch statistics


def _check_inference(module: nn.Module, what: str) -> None:
    training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
    if training:
        raise FusedForInferenceError(
            f"{what} is for inference only, but {training[0]} is in training mode ({len(training)} modules in all): "
            "call model.eval() first; never fuse a model that will be trained further"
        )


def conv_norm_kernel(conv: nn.Conv2d, norm: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """The weight and bias of one convolution equal to ``norm(conv(x))``, in float64 on the CPU.

    Args:
        conv: the convolution (with or without a bias).
        norm: a foldable norm (:func:`is_foldable_norm`), or ``None`` / ``nn.Identity`` for none.

    Returns:
        ``(weight, bias)``: ``weight`` of ``conv.weight``'s shape, ``bias`` ``[out_channels]``.
    """
    weight = conv.weight.detach().to("cpu", torch.float64)
    bias = (
        conv.bias.detach().to("cpu", torch.float64)
        if conv.bias is not None
        else torch.zeros(weight.shape[0], dtype=torch.float64)
    )
    if norm is None or isinstance(norm, nn.Identity):
        return weight, bias
    if not is_foldable_norm(norm):
        raise TypeError(f"cannot fold a {type(norm).__name__} into a convolution")
    mean = norm.running_mean.detach().to("cpu", torch.float64)
    var = norm.running_var.detach().to("cpu", torch.float64)
    gamma = norm.weight.detach().to("cpu", torch.float64) if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach().to("cpu", torch.float64) if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    if scale.shape[0] != weight.shape[0]:
        raise ValueError(f"a norm of {scale.shape[0]} channels after a convolution of {weight.shape[0]} outputs")
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), (bias - mean) * scale + beta


def _set_kernel(conv: nn.Conv2d, weight: Tensor, bias: Tensor, requires_grad: bool | None = None) -> None:
    """Gives ``conv`` (in place) the float64 ``weight`` (of its weight's shape) and ``bias``, in its own dtype,
    device and memory format; the new parameters require gradients like its old weight unless ``requires_grad``
    says otherwise."""
    like = conv.weight
    requires_grad = like.requires_grad if requires_grad is None else requires_grad
    # empty_like keeps the old weight's memory format (channels-last backbones stay channels-last)
    conv.weight = nn.Parameter(torch.empty_like(like).copy_(weight), requires_grad=requires_grad)
    conv.bias = nn.Parameter(bias.to(like.device, like.dtype), requires_grad=requires_grad)


@torch.no_grad()
def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Folds the foldable ``norm`` into ``conv`` in place (``conv`` gets a bias); the caller removes ``norm``."""
    _set_kernel(conv, *conv_norm_kernel(conv, norm))


@torch.no_grad()
def merge_parallel_convs(branches: Sequence[tuple[nn.Conv2d, nn.Module | None]]) -> nn.Conv2d:
    """One convolution computing ``sum_i norm_i(conv_i(x))`` for parallel branches over the same input.

    Branch kernels smaller than the largest are zero-padded to it (centred), which is exact when the branches see
    the input alike: the same channels, stride and groups, no dilation, odd kernels with zero padding
    ``(k - 1) // 2`` (RepVGG's 3x3 + 1x1 branches).

    Args:
        branches: ``(conv, norm)`` pairs; ``norm`` foldable, ``None`` or ``nn.Identity``.

    Returns:
        a new ``nn.Conv2d`` with a bias, of the first convolution's dtype and device.

    Raises:
        ValueError: if the branches cannot be merged exactly.
    """
    convs = [conv for conv, _ in branches]
    first = convs[0]
    size = max(max(conv.kernel_size) for conv in convs)
    for conv in convs:
        same = all(getattr(conv, a) == getattr(first, a) for a in ("in_channels", "out_channels", "stride", "groups"))
        centred = conv.padding == tuple((k - 1) // 2 for k in conv.kernel_size)
        odd = all(k % 2 == 1 for k in conv.kernel_size)
        if not (same and centred and odd) or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
            raise ValueError(f"cannot merge parallel convolutions {convs}: they must be centred and alike")
    weight = torch.zeros(first.out_channels, first.in_channels // first.groups, size, size, dtype=torch.float64)
    bias = torch.zeros(first.out_channels, dtype=torch.float64)
    for conv, norm in branches:
        branch_weight, branch_bias = conv_norm_kernel(conv, norm)
        pad_h, pad_w = (size - conv.kernel_size[0]) // 2, (size - conv.kernel_size[1]) // 2
        weight += F.pad(branch_weight, (pad_w, pad_w, pad_h, pad_h))
        bias += branch_bias
    merged = nn.Conv2d(
        first.in_channels,
        first.out_channels,
        size,
        stride=first.stride,
        padding=(size - 1) // 2,
        groups=first.groups,
        bias=True,
    ).to(device=first.weight.device, dtype=first.weight.dtype)
    merged.train(first.training)
    _set_kernel(merged, weight, bias, requires_grad=first.weight.requires_grad)
    return merged


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    """``module`` if it is a ``Conv2d``, the last convolution of a plain ``Sequential`` ending in one, else None."""
    if type(module) is nn.Conv2d:
        return module
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward and len(module):
        return _last_conv(module[-1])
    return None


def _pairs_of(module: nn.Module) -> Iterable[tuple[nn.Conv2d, str]]:
    """``(conv, norm attribute)`` of the foldable pairs whose norm is a direct child of ``module``."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        names = list(module._modules)
        for before, after in zip(names, names[1:]):
            conv = module._modules[before]
            if type(conv) is nn.Conv2d and is_foldable_norm(module._modules[after]):
                yield conv, after
    for conv_name, norm_name in CONV_NORM_PAIRS.get(type(module), ()):
        child = getattr(module, conv_name, None)
        conv = _last_conv(child) if isinstance(child, nn.Module) else None
        if conv is not None and is_foldable_norm(getattr(module, norm_name, None)):
            yield conv, norm_name


@torch.no_grad()
def fold_conv_norms(model: nn.Module) -> int:
    """Folds every known convolution-norm pair of ``model`` (module docstring) in place; returns how many.

    Each folded norm is replaced by ``nn.Identity``. Running it again folds nothing.

    Raises:
        FusedForInferenceError: if a module of ``model`` is in training mode.
    """
    _check_inference(model, "folding norms into convolutions")
    found = [(parent, conv, name) for parent in model.modules() for conv, name in list(_pairs_of(parent))]
    for parent, conv, name in found:
        norm = getattr(parent, name)
        fold_conv_norm(conv, norm)
        setattr(parent, name, nn.Identity().train(norm.training))
    return len(found)


def _refuse_training(module: nn.Module, args: tuple) -> None:
    if module.training:
        raise FusedForInferenceError(
            f"this {type(module).__name__} was fused for inference (fuse_for_inference): its batch norms are folded "
            "and cannot train; build the model again (and load its unfused checkpoint) to train it"
        )


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Folds the model's convolution-norm pairs and re-parameterises its blocks, in place, for inference.

    First every module with a ``reparameterize()`` method gets it called (it merges its branches, folding their
    norms); then every known convolution-norm pair is folded (module docstring). The outputs are those of the
    unfused model up to float rounding. Fusing a fused model again changes nothing. Afterwards the model refuses to
    run in training mode.

    Args:
        model: the model, in eval mode (``model.eval()``), with its weights loaded.

    Returns:
        ``model``.

    Raises:
        FusedForInferenceError: if a module of ``model`` is in training mode.
    """
    _check_inference(model, "fuse_for_inference")
    blocks = [m for m in model.modules() if callable(getattr(m, "reparameterize", None))]
    reparameterized = sum(bool(block.reparameterize()) for block in blocks)
    folded = fold_conv_norms(model)
    if not getattr(model, _FUSED_FLAG, False):
        model.register_forward_pre_hook(_refuse_training)
        setattr(model, _FUSED_FLAG, True)
    if reparameterized or folded:
        logger.info(f"Fused for inference: {reparameterized} re-parameterised blocks, {folded} folded norms")
    return model


def is_fused_for_inference(model: nn.Module) -> bool:
    """Whether :func:`fuse_for_inference` was applied to ``model``."""
    return bool(getattr(model, _FUSED_FLAG, False))
