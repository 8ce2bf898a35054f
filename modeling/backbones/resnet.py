"""torchvision ResNets as multi-stage feature extractors, with frozen batch norm and frozen early stages."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ResNetBackbone", "conv_norm", "load_state_dict_file", "run_resnet_stages"]

STAGES = ("layer1", "layer2", "layer3", "layer4")
STAGE_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
ARCHS = {
    "resnet18": (torchvision.models.resnet18, 1),
    "resnet34": (torchvision.models.resnet34, 1),
    "resnet50": (torchvision.models.resnet50, 4),
    "resnet101": (torchvision.models.resnet101, 4),
    "resnet152": (torchvision.models.resnet152, 4),
}
NORMS = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d}


def load_state_dict_file(path_or_url: str) -> dict[str, Tensor]:
    """Reads a state dict from a local file or a URL (downloaded once into the torch hub cache).

    A checkpoint that wraps the weights as ``{"model": ...}`` or ``{"state_dict": ...}`` is unwrapped.

    Args:
        path_or_url: local path, or ``http(s)://`` URL.

    Returns:
        the state dict, on CPU.

    Raises:
        FileNotFoundError: if a local path does not exist.
        TypeError: if the file holds no state dict.
    """
    if path_or_url.startswith(("http://", "https://")):
        checkpoint = _download_state_dict(path_or_url)
    else:
        path = os.path.expanduser(path_or_url)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights file not found: {path_or_url}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"{path_or_url} holds a {type(checkpoint).__name__}, not a state dict")
    return dict(checkpoint)


def _download_state_dict(url: str) -> Any:
    """``torch.hub.load_state_dict_from_url`` (cached); a failed download says how to do without it."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True)
    except (URLError, OSError) as e:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
        raise RuntimeError(
            f"Cannot download the pretrained backbone weights {url} ({type(e).__name__}: {e}). Without network, "
            f"copy the file to {cache} (the download cache), or set model.backbone.weights to a local file "
            "(model.backbone.weights=/path/to/weights.pth), or model.backbone.weights=null to start the backbone "
            "from random weights (when a full checkpoint is loaded afterwards, e.g. train.init_checkpoint, the "
            "backbone weights are not needed)."
        ) from e


def conv_norm(conv: nn.Module, norm: nn.Module, x: Tensor, fold: bool = True) -> Tensor:
    """``norm(conv(x))``; with ``fold``, a ``FrozenBatchNorm2d`` after an ``nn.Conv2d`` is applied through the
    convolution's weight and bias instead (``conv(x, W * s) + (b * s + t)`` for the norm's ``x * s + t``).

    The same function of ``x`` and of the convolution's parameters (its gradients flow through ``W * s``) up to float
    rounding, without the extra pass over the output in the forward and backward passes. Other norms (a trainable
    batch norm uses batch statistics) and other convolution modules run as they are.
    """
    if not (fold and type(norm) is FrozenBatchNorm2d and type(conv) is nn.Conv2d):
        return norm(conv(x))
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, conv.weight * scale.view(-1, 1, 1, 1), bias)


def _run_block(block: nn.Module, x: Tensor, fold: bool) -> Tensor:
    """A torchvision ``BasicBlock``/``Bottleneck`` (exact types: their forward, with :func:`conv_norm`), or any
    other module as it is."""
    kind = type(block)
    if kind is Bottleneck:
        out = block.relu(conv_norm(block.conv1, block.bn1, x, fold))
        out = block.relu(conv_norm(block.conv2, block.bn2, out, fold))
        out = conv_norm(block.conv3, block.bn3, out, fold)
    elif kind is BasicBlock:
        out = block.relu(conv_norm(block.conv1, block.bn1, x, fold))
        out = conv_norm(block.conv2, block.bn2, out, fold)
    else:
        return block(x)
    downsample = block.downsample
    if downsample is None:
        identity = x
    elif type(downsample) is nn.Sequential and len(downsample) == 2:
        identity = conv_norm(downsample[0], downsample[1], x, fold)
    else:
        identity = downsample(x)
    out += identity
    return block.relu(out)


def run_resnet_stages(net: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """The forward pass of a ResNet-layout backbone: stem (``conv1``, ``bn1``, ``relu``, ``maxpool``), then the
    modules named in ``net.stage_names``; returns the stages in ``net.out_features``, in that order.

    Frozen batch norms are folded into the convolutions before them (:func:`conv_norm`) unless
    ``net.fold_frozen_norms`` is ``False`` (the reference path: each module's own forward).
    """
    fold = getattr(net, "fold_frozen_norms", True)
    x = net.maxpool(net.relu(conv_norm(net.conv1, net.bn1, images, fold)))
    outputs = {}
    for stage in net.stage_names:
        module = getattr(net, stage)
        if fold and type(module) is nn.Sequential:
            for block in module:
                x = _run_block(block, x, fold)
        else:
            x = module(x)
        if stage in net.out_features:
            outputs[stage] = x
    return {name: outputs[name] for name in net.out_features}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet returning the outputs of chosen stages.

    The module keeps torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, without ``fc``), so
    torchvision ImageNet weights load directly. Stages after the last returned one are not built.

    ``freeze_at`` follows detectron2: ``0`` freezes nothing, ``1`` the stem (``conv1``, ``bn1``), ``k >= 2`` the
    stem and ``layer1`` .. ``layer{k-1}``. Frozen parameters get ``requires_grad=False`` and frozen norm layers
    stay in eval mode under ``train()``. The official Salience/Relation DETR configs
    (``freeze_indices=(0,)``) correspond to ``freeze_at=2``.

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.
        out_features: stages to return, among ``"layer1"`` .. ``"layer4"``, finest first.
        freeze_at: see above, 0..5.
        norm: ``"FrozenBN"`` (torchvision's ``FrozenBatchNorm2d``, eps 1e-5) or ``"BN"``.
        weights: local path or URL of a state dict in torchvision's layout (``fc.*`` keys are ignored);
            ``None`` keeps the random initialisation.
        fold_frozen_norms: apply each ``FrozenBatchNorm2d`` through the convolution before it, in training and
            inference (:func:`conv_norm`: same values up to float rounding, one pass less over every feature map;
            parameters and state dict unchanged). ``False`` runs torchvision's module forwards (the reference).

    Attributes:
        out_features: names of the returned stages.
        out_channels: channels of each returned stage.
        strides: stride of each returned stage w.r.t. the input.
        frozen_modules: names of the frozen children.
    """

    def __init__(
        self,
        name: str = "resnet50",
        out_features: Sequence[str] = ("layer2", "layer3", "layer4"),
        freeze_at: int = 2,
        norm: str = "FrozenBN",
        weights: str | None = None,
        fold_frozen_norms: bool = True,
    ):
        super().__init__()
        if name not in ARCHS:
            raise ValueError(f"unknown ResNet '{name}', expected one of {sorted(ARCHS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm '{norm}', expected one of {sorted(NORMS)}")
        out_features = list(out_features)
        if not out_features or not all(f in STAGES for f in out_features) or out_features != sorted(set(out_features)):
            raise ValueError(f"out_features must be distinct stages of {STAGES}, increasing, got {out_features}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        builder, expansion = ARCHS[name]
        resnet = builder(weights=None, norm_layer=NORMS[norm])
        num_stages = max(STAGES.index(f) for f in out_features) + 1
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        for stage in STAGES[:num_stages]:
            self.add_module(stage, getattr(resnet, stage))
        self.stage_names = list(STAGES[:num_stages])
        self.out_features = out_features
        self.out_channels = [64 * expansion * 2 ** STAGES.index(f) for f in out_features]
        self.strides = [STAGE_STRIDES[f] for f in out_features]
        self.freeze_at = freeze_at
        self.fold_frozen_norms = fold_frozen_norms
        if weights is not None:
            self.load_weights(weights)
        self.frozen_modules = (["conv1", "bn1"] if freeze_at >= 1 else []) + self.stage_names[: max(freeze_at - 1, 0)]
        for module_name in self.frozen_modules:
            getattr(self, module_name).requires_grad_(False)
        self.train(self.training)

    def load_weights(self, path_or_url: str) -> None:
        """Loads a torchvision-layout state dict; keys of parts not built here (``fc``, later stages) are ignored.

        Raises:
            FileNotFoundError: if a local file is missing.
            KeyError: if keys of built parts are missing or unknown keys remain.
        """
        state = load_state_dict_file(path_or_url)
        skipped = ("fc.",) + tuple(f"{s}." for s in STAGES if s not in self.stage_names)
        state = {k: v for k, v in state.items() if not k.startswith(skipped) and not k.endswith("num_batches_tracked")}
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise KeyError(
                f"weights {path_or_url} do not match {type(self).__name__}: "
                f"missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}"
            )

    def train(self, mode: bool = True) -> ResNetBackbone:
        """Sets the mode; frozen modules always stay in eval mode."""
        super().train(mode)
        for module_name in getattr(self, "frozen_modules", []):
            getattr(self, module_name).eval()
        return self

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Runs the stem and the stages.

        Args:
            images: ``[B, 3, H, W]`` normalised images.

        Returns:
            dict, in ``out_features`` order, of ``[B, out_channels[i], ceil(H / strides[i]), ceil(W / strides[i])]``
            feature maps (exactly ``H / stride`` for sizes divisible by 32).
        """
        return run_resnet_stages(self, images)
