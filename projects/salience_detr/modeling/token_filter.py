"""Hierarchical query filtering (Salience DETR, Sec. 3.1): which tokens each encoder layer updates.

Level-wise: of the valid tokens of level ``l`` of each image, the ``int(n_valid * level_filter_ratio[l])`` most
salient are kept (the batch maximum of that count is taken from every image, so padded batches select alike).
The kept tokens of all levels are sorted by salience. Layer-wise: encoder layer ``i`` updates the first
``int(n_kept * layer_filter_ratio[i])`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from modeling.transformer import MultiLevelTokens, flatten_levels

__all__ = ["HierarchicalTokenFilter", "TokenSelection"]


class TokenSelection(NamedTuple):
    """The tokens the filtered encoder updates.

    Attributes:
        layer_indices: per encoder layer, ``[B, n_i]`` int64 token indices in ``S``, most salient first.
        focus_counts: ``[B]`` number of tokens of each image whose updates are written back.
        foreground_score: ``[B, S]`` salience logits, padded tokens set to the minimum.
    """

    layer_indices: list[Tensor]
    focus_counts: Tensor
    foreground_score: Tensor


class HierarchicalTokenFilter(nn.Module):
    """Selects the tokens of every encoder layer from the salience logits.

    The ratios are buffers, so checkpoints carry them.

    Args:
        level_filter_ratio: per level, the kept fraction of valid tokens.
        layer_filter_ratio: per encoder layer, the updated fraction of the kept tokens.
    """

    def __init__(self, level_filter_ratio: Sequence[float], layer_filter_ratio: Sequence[float]):
        super().__init__()
        self.register_buffer("level_filter_ratio", torch.tensor(list(level_filter_ratio), dtype=torch.float32))
        self.register_buffer("layer_filter_ratio", torch.tensor(list(layer_filter_ratio), dtype=torch.float32))

    @property
    def num_layers(self) -> int:
        return self.layer_filter_ratio.numel()

    def forward(self, salience: Sequence[Tensor], tokens: MultiLevelTokens) -> TokenSelection:
        """Selection of every layer.

        Args:
            salience: per level, finest first, ``[B, 1, h_l, w_l]`` salience logits.
            tokens: the flattened inputs (level masks, start indices).

        Returns:
            :class:`TokenSelection`.
        """
        per_image, per_level = self._token_budget(tokens.level_masks)
        scores, indices = self._level_topk(salience, tokens, per_level)
        order = scores.sort(dim=1, descending=True)[1]
        ranked = indices.gather(1, order)
        counts = (ranked.shape[1] * self.layer_filter_ratio).to(torch.int64).tolist()
        foreground = flatten_levels(salience).squeeze(-1)
        foreground = foreground.masked_fill(tokens.mask, foreground.min())
        return TokenSelection([ranked[:, :count] for count in counts], per_image, foreground)

    def _token_budget(self, level_masks: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """Kept tokens per image ``[B]`` and per level (batch maximum, capped at the level size)."""
        valid = torch.stack([(~mask).sum((1, 2)) for mask in level_masks], -1)  # [B, L]
        kept = (valid * self.level_filter_ratio).int()
        sizes = [mask.shape[1] * mask.shape[2] for mask in level_masks]
        per_level = [min(int(k), size) for k, size in zip(kept.max(0)[0].tolist(), sizes)]
        return kept.sum(-1), per_level

    @staticmethod
    def _level_topk(salience: Sequence[Tensor], tokens: MultiLevelTokens, per_level: list[int]):
        """Top salience logits ``[B, sum k_l]`` and their token indices, level after level (finest first)."""
        scores, indices = [], []
        starts = tokens.level_start_index.tolist()
        for level, score in enumerate(salience):
            flat = score.flatten(1)
            valid_score = flat.masked_fill(tokens.level_masks[level].flatten(1), score.min())
            top_score, top_index = valid_score.topk(per_level[level], dim=1)
            scores.append(top_score)
            indices.append(top_index + starts[level])
        return torch.cat(scores, 1), torch.cat(indices, 1)
