"""Learnt background embedding (Salience DETR): added to the tokens the filtered encoder did not update."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BackgroundEmbedding"]


class BackgroundEmbedding(nn.Module):
    """Learnt row and column embeddings of a level's cells, ``[column | row]`` channels.

    *Absolute* (the paper): cell ``(i, j)`` reads row ``i`` and column ``j`` of the tables, so a level may have
    at most ``num_embeddings`` rows and columns. *Relative*: the cell centre is normalised by its image's valid
    size and mapped onto the tables, ``floor((j + 0.5) / valid_w * num_embeddings)`` (likewise rows), so any size
    works and the same relative position reads the same entry.

    Args:
        num_embeddings: rows of each table.
        embed_dim: output channels (``embed_dim / 2`` per table).
        relative: use relative positions.
    """

    def __init__(self, num_embeddings: int = 200, embed_dim: int = 256, relative: bool = False):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.relative = relative
        self.row_embed = nn.Embedding(num_embeddings, embed_dim // 2)
        self.col_embed = nn.Embedding(num_embeddings, embed_dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: Tensor) -> Tensor:
        """Embeds every cell of a level.

        Args:
            mask: ``[B, h, w]`` bool, ``True`` on padding.

        Returns:
            ``[B, embed_dim, h, w]``.
        """
        batch, height, width = mask.shape
        rows, cols = self._indices(mask)  # [B, h], [B, w]
        col_part = self.col_embed(cols)[:, None, :, :].expand(-1, height, -1, -1)
        row_part = self.row_embed(rows)[:, :, None, :].expand(-1, -1, width, -1)
        return torch.cat([col_part, row_part], dim=-1).permute(0, 3, 1, 2)

    def _indices(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Table rows ``[B, h]`` and columns ``[B, w]`` read by every row and column of the level."""
        batch, height, width = mask.shape
        if max(height, width) > self.num_embeddings and not self.relative:
            raise ValueError(
                f"BackgroundEmbedding: a {height}x{width} level needs more than num_embeddings="
                f"{self.num_embeddings} positions; raise num_embeddings or use relative=True"
            )
        rows = torch.arange(height, device=mask.device).expand(batch, -1)
        cols = torch.arange(width, device=mask.device).expand(batch, -1)
        if not self.relative:
            return rows, cols
        valid_h = (~mask[:, :, 0]).sum(1, keepdim=True).clamp(min=1)
        valid_w = (~mask[:, 0, :]).sum(1, keepdim=True).clamp(min=1)
        return self._relative(rows, valid_h), self._relative(cols, valid_w)

    def _relative(self, positions: Tensor, valid: Tensor) -> Tensor:
        index = ((positions + 0.5) / valid * self.num_embeddings).floor().long()
        return index.clamp(max=self.num_embeddings - 1)
