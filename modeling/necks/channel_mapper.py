"""Channel mapper: projects backbone stages to a common width and adds coarser levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

__all__ = ["ChannelMapper"]


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, stride: int, num_groups: int) -> nn.Sequential:
    """Bias-free conv followed by GroupNorm, no activation; children ``0`` (conv) and ``1`` (norm)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=False)
    nn.init.xavier_uniform_(conv.weight, gain=1.0)
    return nn.Sequential(conv, nn.GroupNorm(num_groups, out_channels))


class ChannelMapper(nn.Module):
    """Maps each input level to ``out_channels`` and appends stride-2 levels.

    Input level ``i`` goes through a ``kernel_size`` conv (bias-free) + GroupNorm. The first extra level is a
    3x3 stride-2 conv + GroupNorm of the *last input* (the raw backbone stage, not its mapped version); each
    further extra level applies another one to the previous extra level. There is no activation.
    ``convs[i]`` for ``i < len(in_channels)`` are the input mappings, the rest the extra levels.

    Args:
        in_channels: channels of the input levels, finest first.
        out_channels: channels of every output level.
        num_outs: number of output levels (``>= len(in_channels)``).
        kernel_size: kernel of the input mappings (odd).
        num_groups: GroupNorm groups.

    Attributes:
        out_channels_list: channels of each output level (all ``out_channels``).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_outs: int = 4,
        kernel_size: int = 1,
        num_groups: int = 32,
    ):
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels or num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be >= the number of input levels ({len(in_channels)})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.out_channels_list = [out_channels] * num_outs
        convs = [_conv_norm(c, out_channels, kernel_size, 1, num_groups) for c in in_channels]
        num_extra = num_outs - len(in_channels)
        extra_in = ([in_channels[-1]] + [out_channels] * (num_extra - 1))[:num_extra]
        convs += [_conv_norm(c, out_channels, 3, 2, num_groups) for c in extra_in]
        self.convs = nn.ModuleList(convs)

    def forward(self, features: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
        """Maps the input levels and computes the extra ones.

        Args:
            features: ``[B, in_channels[i], H_i, W_i]`` maps, finest first (a dict is read in its order).

        Returns:
            list of ``num_outs`` maps ``[B, out_channels, H_i, W_i]``; extra level ``j`` has the size of a
            stride-2, padding-1, 3x3 conv of the level before it.
        """
        inputs = list(features.values()) if isinstance(features, Mapping) else list(features)
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"ChannelMapper expects {len(self.in_channels)} input levels, got {len(inputs)}")
        outputs = [conv(x) for conv, x in zip(self.convs, inputs)]
        previous = inputs[-1]
        for conv in self.convs[len(inputs) :]:
            previous = conv(previous)
            outputs.append(previous)
        return outputs
