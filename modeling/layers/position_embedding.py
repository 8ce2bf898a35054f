"""Sinusoidal position embeddings: of feature-map pixels (for the encoder) and of point/box coordinates (for
the decoder queries).

Both use the frequencies of DETR: for ``n`` features per coordinate and temperature ``T``, feature pair
``k`` (features ``2k`` and ``2k + 1``) uses the period ``T ** (2k / n)``, and the features are interleaved
``[sin(v / T^(0/n)), cos(v / T^(0/n)), sin(v / T^(2/n)), cos(v / T^(2/n)), ...]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine", "get_sine_pos_embed", "sine_frequencies"]


def sine_frequencies(
    num_feats: int, temperature: float, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Periods ``T ** (2 * floor(i / 2) / num_feats)`` for ``i < num_feats``.

    Args:
        num_feats: features per coordinate (even).
        temperature: ``T``.
        device: device of the result.
        dtype: floating dtype of the result (and of its computation).

    Returns:
        tensor ``[num_feats]`` of ``dtype``; entries ``2k`` and ``2k + 1`` are equal.
    """
    index = torch.arange(num_feats, dtype=dtype, device=device)
    return temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(phase: Tensor) -> Tensor:
    """``[..., n]`` phases -> ``[..., n]`` with ``sin`` on even and ``cos`` on odd features."""
    return torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Sine embedding of the pixel positions of a padded feature map (DETR), ``y`` features before ``x``.

    Positions are 1-based running counts of valid (unmasked) pixels along each axis. With ``normalize``, a
    position ``c`` becomes ``(c + offset) / (c_last + eps) * scale`` where ``c_last`` is the count at the last
    row (for ``y``) or column (for ``x``), i.e. the valid height/width of that column/row; otherwise it
    becomes ``c + offset``. Salience DETR and Relation DETR use ``normalize=True, offset=-0.5`` (pixel
    centres mapped into ``(0, 2 * pi)``).

    Args:
        num_pos_feats: features per axis; the embedding has ``2 * num_pos_feats`` channels.
        embed_dim: instead of ``num_pos_feats``, the channels of the embedding (``num_pos_feats = embed_dim // 2``),
            so that a config can interpolate it from the transformer's width.
        temperature: ``T``, or a pair ``(T_x, T_y)``.
        normalize: normalise the positions by the valid size.
        scale: multiplier of normalised positions.
        eps: added to the valid size in the normalisation.
        offset: added to the 1-based positions.
    """

    def __init__(
        self,
        num_pos_feats: int | None = None,
        temperature: float | tuple[float, float] = 10000,
        normalize: bool = False,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
        embed_dim: int | None = None,
    ):
        super().__init__()
        if embed_dim is not None:
            if embed_dim % 2 or (num_pos_feats is not None and num_pos_feats != embed_dim // 2):
                raise ValueError(f"embed_dim={embed_dim} must be even and twice num_pos_feats={num_pos_feats}")
            num_pos_feats = embed_dim // 2
        num_pos_feats = 64 if num_pos_feats is None else num_pos_feats
        if isinstance(temperature, int | float):
            temperature = (temperature, temperature)
        if len(temperature) != 2:
            raise ValueError(f"temperature must be a number or a pair (t_x, t_y), got {temperature}")
        self.num_pos_feats = num_pos_feats
        self.temperature_x, self.temperature_y = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset
        # The frequencies are buffers (as in the official implementations), so checkpoints carry them.
        self.register_buffer("dim_tx", sine_frequencies(num_pos_feats, self.temperature_x))
        self.register_buffer("dim_ty", sine_frequencies(num_pos_feats, self.temperature_y))

    def forward(self, mask: Tensor) -> Tensor:
        """Embeds every pixel position of a batch of padded maps.

        Args:
            mask: ``[B, H, W]`` bool, ``True`` on padded pixels.

        Returns:
            tensor ``[B, 2 * num_pos_feats, H, W]``: channels ``[0, num_pos_feats)`` embed ``y``, the rest ``x``;
            in the dtype of the frequency buffers, at least float32 (float64 after ``module.double()``).
        """
        not_mask = (~mask.bool()).to(torch.promote_types(self.dim_tx.dtype, torch.float32))
        y_pos = not_mask.cumsum(1)
        x_pos = not_mask.cumsum(2)
        if self.normalize:
            y_pos = (y_pos + self.offset) / (y_pos[:, -1:, :] + self.eps) * self.scale
            x_pos = (x_pos + self.offset) / (x_pos[:, :, -1:] + self.eps) * self.scale
        else:
            y_pos = y_pos + self.offset
            x_pos = x_pos + self.offset
        pos_x = _interleave_sin_cos(x_pos[..., None] / self.dim_tx)
        pos_y = _interleave_sin_cos(y_pos[..., None] / self.dim_ty)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature=({self.temperature_x}, {self.temperature_y}), "
            f"normalize={self.normalize}, scale={self.scale}, eps={self.eps}, offset={self.offset}"
        )


def get_sine_pos_embed(
    pos_tensor: Tensor,
    num_pos_feats: int = 128,
    temperature: float = 10000,
    scale: float = 2 * math.pi,
    exchange_xy: bool = True,
) -> Tensor:
    """Sine embedding of each coordinate of points or boxes (decoder query positions, box relations).

    Each coordinate ``v`` gives ``num_pos_feats`` interleaved features of the phases ``v * scale / T^(2k/n)``;
    the per-coordinate blocks are concatenated in coordinate order, except that with ``exchange_xy`` the first
    two blocks are swapped, so ``(x, y, w, h)`` embeds as ``[y, x, w, h]``.

    Args:
        pos_tensor: ``[..., C]`` coordinates (``C >= 2`` when ``exchange_xy``), e.g. normalised ``(cx, cy, w, h)``.
        num_pos_feats: features per coordinate.
        temperature: ``T``.
        scale: multiplier of the coordinates.
        exchange_xy: put the ``y`` block before the ``x`` block.

    Returns:
        tensor ``[..., C * num_pos_feats]`` in the dtype of ``pos_tensor``, at least float32 (the frequencies
        are computed in that dtype).
    """
    dtype = torch.promote_types(pos_tensor.dtype, torch.float32)
    freq = sine_frequencies(num_pos_feats, temperature, pos_tensor.device, dtype)
    embed = _interleave_sin_cos(pos_tensor[..., None] * scale / freq)
    if exchange_xy:
        embed = torch.cat((embed[..., 1:2, :], embed[..., 0:1, :], embed[..., 2:, :]), dim=-2)
    return embed.flatten(-2)
