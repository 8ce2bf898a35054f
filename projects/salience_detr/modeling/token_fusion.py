"""Cross-level token fusion (Salience DETR, Sec. 3.3): RepVGG-style blocks on a path-aggregation network.

The encoder memory, reshaped to maps, goes through a top-down path (coarse to fine: lateral 1x1 conv of the
coarser map, nearest upsampling, concatenation with the finer map, CSP block) and a bottom-up path (stride-2
3x3 conv of the finer result, concatenation with the coarser top-down map, CSP block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.fusion import FusedForInferenceError, merge_parallel_convs

__all__ = ["CSPRepLayer", "GlobalContextGate", "RepVGGPluXBlock", "RepVGGPluXNetwork", "conv_norm_act"]

NORMS = {"BatchNorm2d": nn.BatchNorm2d, "SyncBatchNorm": nn.SyncBatchNorm}
ACTIVATIONS = {"SiLU": nn.SiLU, "ReLU": nn.ReLU, "GELU": nn.GELU}


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}, expected one of {sorted(table)}")
    return table[name]


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    norm: str = "BatchNorm2d",
    activation: str | None = "SiLU",
) -> nn.Sequential:
    """Bias-free conv (``0``), norm (``1``) and, unless ``activation`` is None, an activation (``2``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        _lookup(NORMS, norm, "norm")(out_channels),
    ]
    if activation is not None:
        layers.append(_lookup(ACTIVATIONS, activation, "activation")())
    return nn.Sequential(*layers)


class GlobalContextGate(nn.Module):
    """Attention-pooled global context gating the channels: ``x * sigmoid(excite(sum_p softmax(mask)_p x_p))``.

    Args:
        channels: input channels.
        reduction: channel reduction of the excitation bottleneck.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.attention_pool = nn.Conv2d(channels, 1, kernel_size=1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Gates ``[B, C, H, W]``."""
        batch, channels, height, width = x.shape
        weights = self.attention_pool(x).view(batch, 1, height * width).softmax(dim=2).unsqueeze(-1)
        context = torch.matmul(x.view(batch, channels, height * width).unsqueeze(1), weights)
        return self.excite(context.view(batch, channels, 1, 1)) * x


class RepVGGPluXBlock(nn.Module):
    """``gate(act(conv3x3(x) + conv1x1(x))) + x``, both convs grouped and batch-normalised.

    For inference, :meth:`reparameterize` merges the two branches (RepVGG): ``conv3x3`` becomes one 3x3 grouped
    convolution with a bias and ``conv1x1`` is removed (``None``).

    Args:
        channels: input and output channels.
        groups: groups of both convolutions.
        activation: activation after the sum.
    """

    def __init__(self, channels: int, groups: int = 4, activation: str = "SiLU"):
        super().__init__()
        self.conv3x3 = conv_norm_act(channels, channels, 3, groups=groups, activation=None)
        self.conv1x1 = conv_norm_act(channels, channels, 1, groups=groups, activation=None)
        self.activation = _lookup(ACTIVATIONS, activation, "activation")()
        self.gate = GlobalContextGate(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``[B, C, H, W]`` to ``[B, C, H, W]``."""
        branches = self.conv3x3(x) if self.conv1x1 is None else self.conv3x3(x) + self.conv1x1(x)
        return self.gate(self.activation(branches)) + x

    def reparameterize(self) -> bool:
        """Merges the two conv-norm branches into one 3x3 convolution (eval mode; the outputs stay the same up to
        float rounding). Returns whether anything changed: False once done.

        Raises:
            FusedForInferenceError: in training mode (the batch norms would use batch statistics).
        """
        if self.conv1x1 is None:
            return False
        if self.training:
            raise FusedForInferenceError("RepVGGPluXBlock.reparameterize is for inference: call eval() first")
        self.conv3x3 = merge_parallel_convs([(branch[0], branch[1]) for branch in (self.conv3x3, self.conv1x1)])
        self.conv1x1 = None
        return True


class CSPRepLayer(nn.Module):
    """Cross-stage-partial layer: ``blocks(main(x)) + shortcut(x)``, both branches 1x1 conv-norm-act.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_blocks: :class:`RepVGGPluXBlock` s on the main branch.
        groups: groups of the blocks' convolutions.
        norm: norm of the 1x1 branches.
        activation: activation everywhere.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 3,
        groups: int = 4,
        norm: str = "BatchNorm2d",
        activation: str = "SiLU",
    ):
        super().__init__()
        self.main = conv_norm_act(in_channels, out_channels, 1, norm=norm, activation=activation)
        self.shortcut = conv_norm_act(in_channels, out_channels, 1, norm=norm, activation=activation)
        self.blocks = nn.Sequential(*[RepVGGPluXBlock(out_channels, groups, activation) for _ in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``[B, in_channels, H, W]`` to ``[B, out_channels, H, W]``."""
        return self.blocks(self.main(x)) + self.shortcut(x)


class RepVGGPluXNetwork(nn.Module):
    """Path aggregation of ``L`` maps with :class:`CSPRepLayer` fusion.

    ``lateral_convs[i]`` / ``top_down_blocks[i]`` fuse level ``i + 1`` into level ``i``; ``downsample_convs[i]`` /
    ``bottom_up_blocks[i]`` fuse level ``i`` into level ``i + 1``.

    Args:
        channels: channels of every level (all equal).
        num_levels: ``L``.
        groups: groups of the RepVGG blocks' convolutions.
        norm: ``BatchNorm2d`` or ``SyncBatchNorm``.
        activation: ``SiLU``, ``ReLU`` or ``GELU``.
        num_blocks: RepVGG blocks per CSP layer.
    """

    def __init__(
        self,
        channels: int = 256,
        num_levels: int = 4,
        groups: int = 4,
        norm: str = "BatchNorm2d",
        activation: str = "SiLU",
        num_blocks: int = 3,
    ):
        super().__init__()
        self.num_levels = num_levels

        def csp() -> CSPRepLayer:
            return CSPRepLayer(2 * channels, channels, num_blocks, groups, norm, activation)

        num_links = num_levels - 1
        self.lateral_convs = nn.ModuleList(
            conv_norm_act(channels, channels, 1, norm=norm, activation=activation) for _ in range(num_links)
        )
        self.top_down_blocks = nn.ModuleList(csp() for _ in range(num_links))
        self.downsample_convs = nn.ModuleList(
            conv_norm_act(channels, channels, 3, stride=2, norm=norm, activation=activation) for _ in range(num_links)
        )
        self.bottom_up_blocks = nn.ModuleList(csp() for _ in range(num_links))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Fuses ``L`` maps ``[B, C, h_l, w_l]`` (finest first) into ``L`` maps of the same shapes."""
        if len(maps) != self.num_levels:
            raise ValueError(f"RepVGGPluXNetwork expects {self.num_levels} levels, got {len(maps)}")
        top_down = self._top_down(list(maps))
        return self._bottom_up(top_down)

    def _top_down(self, maps: list[Tensor]) -> list[Tensor]:
        outputs = [maps[-1]]
        for level in range(self.num_levels - 2, -1, -1):
            coarser = self.lateral_convs[level](outputs[0])
            outputs[0] = coarser
            upsampled = F.interpolate(coarser, size=maps[level].shape[-2:], mode="nearest")
            outputs.insert(0, self.top_down_blocks[level](torch.cat([upsampled, maps[level]], dim=1)))
        return outputs

    def _bottom_up(self, top_down: list[Tensor]) -> list[Tensor]:
        outputs = [top_down[0]]
        for level in range(self.num_levels - 1):
            downsampled = self.downsample_convs[level](outputs[-1])
            outputs.append(self.bottom_up_blocks[level](torch.cat([downsampled, top_down[level + 1]], dim=1)))
        return outputs
