"""Per-level salience prediction with top-down score modulation (Salience DETR, Sec. 3.2).

Salience is predicted from the coarsest level to the finest. Each finer level's tokens are modulated by the
bilinearly upsampled salience logits of the level above: ``x <- x + x * up(s_{l+1}) * alpha_l`` with a learnt
scalar ``alpha_l`` per level (all but the coarsest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.transformer import MultiLevelTokens

__all__ = ["SaliencePredictor", "TopDownSalience"]


class SaliencePredictor(nn.Module):
    """Salience logit of every token from its own features and the mean of its level.

    ``z = gelu(proj(norm(x)))``; the first half of ``z``'s channels stays local, the second half is replaced by
    its mean over all tokens of the level (padding included); an MLP ``h -> h/2 -> h/4 -> 1`` with GELU scores
    the result.

    Args:
        embed_dim: input channels.
        hidden_dim: channels ``h`` of ``z`` (even, divisible by 4).
    """

    def __init__(self, embed_dim: int = 256, hidden_dim: int = 256):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Linear(embed_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2),
            nn.GELU(),
            nn.Linear(hidden_dim // 2, hidden_dim // 4),
            nn.GELU(),
            nn.Linear(hidden_dim // 4, 1),
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps the tokens of one level ``[B, N, E]`` to salience logits ``[B, N, 1]``."""
        z = F.gelu(self.proj(self.norm(x)))
        local, context = z.split(self.hidden_dim // 2, dim=-1)
        context = context.mean(dim=1, keepdim=True).expand(-1, local.shape[1], -1)
        return self.mlp(torch.cat([local, context], dim=-1))


class TopDownSalience(nn.Module):
    """Salience logits of every level, coarsest first, each finer level modulated by the one above.

    Args:
        embed_dim: token channels.
        num_levels: feature levels ``L``.
        top_down: modulate finer levels by the coarser salience (the paper); False predicts each level alone.
    """

    def __init__(self, embed_dim: int = 256, num_levels: int = 4, top_down: bool = True):
        super().__init__()
        self.num_levels = num_levels
        self.top_down = top_down
        self.predictor = SaliencePredictor(embed_dim, embed_dim)
        self.alpha = nn.Parameter(torch.empty(num_levels - 1).uniform_(-0.3, 0.3))

    def forward(self, memory: Tensor, tokens: MultiLevelTokens) -> list[Tensor]:
        """Predicts salience.

        Args:
            memory: ``[B, S, E]`` tokens to score (Salience DETR: the projected backbone features).
            tokens: the flattened inputs (level shapes).

        Returns:
            per level, finest first, ``[B, 1, h_l, w_l]`` salience logits.
        """
        batch = memory.shape[0]
        level_memory = memory.split(tokens.level_sizes, dim=1)
        maps: list[Tensor] = []
        for level in reversed(range(len(level_memory))):
            x = level_memory[level]
            if maps and self.top_down:
                x = self._modulate(x, maps[-1], tokens.shapes[level], level)
            score = self.predictor(x)
            maps.append(score.transpose(1, 2).reshape(batch, 1, *tokens.shapes[level]))
        return maps[::-1]

    def _modulate(self, x: Tensor, coarser: Tensor, shape: tuple[int, int], level: int) -> Tensor:
        """``x + x * upsample(coarser) * alpha[level]`` for tokens ``x`` ``[B, h*w, E]`` of a ``shape`` level."""
        upsampled = F.interpolate(coarser, size=shape, mode="bilinear", align_corners=True)
        upsampled = upsampled.flatten(2).transpose(1, 2)
        return x + x * upsampled * self.alpha[level]
