"""Two-stage proposals: one box per encoder token, and the projected memory the encoder heads read."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ProposalGenerator", "grid_proposals"]


def grid_proposals(
    mask: Tensor, shapes: Sequence[tuple[int, int]], base_size: float = 0.05, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A box centred on every token, normalised by its image's valid size, sized ``base_size * 2 ** level``.

    Args:
        mask: ``[B, S]`` bool, ``True`` on padded tokens.
        shapes: ``(h_l, w_l)`` of every level.
        base_size: width and height of the finest level's boxes.
        dtype: floating dtype of the result (float32, or float64 for a float64 model).

    Returns:
        ``[B, S, 4]`` normalised cxcywh of ``dtype`` (centres of padded tokens fall outside ``[0, 1]``).
    """
    batch = mask.shape[0]
    proposals, start = [], 0
    for level, (height, width) in enumerate(shapes):
        level_mask = mask[:, start : start + height * width].view(batch, height, width)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(height, dtype=dtype, device=mask.device),
            torch.arange(width, dtype=dtype, device=mask.device),
            indexing="ij",
        )
        valid_size = torch.stack([valid_w, valid_h], -1).view(batch, 1, 1, 2)
        centres = (torch.stack([grid_x, grid_y], -1).expand(batch, -1, -1, -1) + 0.5) / valid_size
        sizes = torch.full_like(centres, base_size * 2.0**level)
        proposals.append(torch.cat([centres, sizes], -1).view(batch, -1, 4))
        start += height * width
    return torch.cat(proposals, 1)


class ProposalGenerator(nn.Module):
    """Turns encoder tokens into proposal logits and the projected memory of the two-stage heads.

    A proposal is valid when all its coordinates lie in ``(low, high)``. Padded tokens and invalid proposals get
    ``+inf`` proposal logits and zeroed memory before the projection ``output_norm(output_proj(.))``.

    Args:
        embed_dim: token channels ``E``.
        base_size: proposal size of the finest level (doubles per level).
        valid_range: ``(low, high)`` bounds of valid proposal coordinates.
    """

    def __init__(self, embed_dim: int = 256, base_size: float = 0.05, valid_range: tuple[float, float] = (0.01, 0.99)):
        super().__init__()
        self.base_size = base_size
        self.valid_range = tuple(valid_range)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.output_norm = nn.LayerNorm(embed_dim)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, memory: Tensor, mask: Tensor, shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """Projected memory and proposals.

        Args:
            memory: ``[B, S, E]`` tokens.
            mask: ``[B, S]`` bool, ``True`` on padded tokens.
            shapes: ``(h_l, w_l)`` of every level.

        Returns:
            ``(output_memory [B, S, E], proposal_logits [B, S, 4])``: the logits are inverse-sigmoid cxcywh,
            ``+inf`` where invalid, in the dtype of ``memory`` (at least float32).
        """
        proposals = grid_proposals(mask, shapes, self.base_size, torch.promote_types(memory.dtype, torch.float32))
        low, high = self.valid_range
        valid = ((proposals > low) & (proposals < high)).all(-1, keepdim=True)
        logits = torch.log(proposals / (1 - proposals))
        logits = logits.masked_fill(mask.unsqueeze(-1) | ~valid, float("inf"))
        kept = memory * (~mask.unsqueeze(-1)) * valid
        return self.output_norm(self.output_proj(kept)), logits
