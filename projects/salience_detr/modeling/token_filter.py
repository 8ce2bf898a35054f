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
        layer_counts: with a static budget, per encoder layer ``[B]`` the number of real tokens among the
            ``n_i`` (the others are budget padding: ranked last, hidden from attention, not written back);
            None otherwise.
    """

    layer_indices: list[Tensor]
    focus_counts: Tensor
    foreground_score: Tensor
    layer_counts: list[Tensor] | None = None

    def real_tokens(self, layer: int) -> Tensor | None:
        """``[B, n_i]`` bool, True on the real tokens of layer ``layer`` (None without a static budget)."""
        if self.layer_counts is None:
            return None
        index = self.layer_indices[layer]
        return torch.arange(index.shape[1], device=index.device)[None, :] < self.layer_counts[layer][:, None]

    def write_counts(self, layer: int) -> Tensor:
        """``[B]`` how many of layer ``layer``'s updated tokens are written back."""
        return self.focus_counts if self.layer_counts is None else self.layer_counts[layer]


class HierarchicalTokenFilter(nn.Module):
    """Selects the tokens of every encoder layer from the salience logits.

    The ratios are buffers, so checkpoints carry them.

    With ``static_budget`` (ONNX export: one traced graph for every image size on a fixed canvas), the numbers of
    tokens are the canvas's largest budgets ``K_l = int(h_l w_l ratio_l)`` and ``C_i = int(sum K_l ratio_i)``
    instead of the image-size-dependent ``k_l`` and ``c_i``; the tokens past the real counts are marked (see
    :class:`TokenSelection`), so for one image the encoder computes what it computes without the flag, with one
    deliberate difference: padded tokens score ``-inf`` here, while the dynamic selection fills them with the
    level's minimum salience. When a level keeps all its valid tokens (ratio 1.0) and its least salient valid token
    *is* that minimum, the dynamic top-k may pick a tied padded token instead (a tie decided inside
    ``torch.topk``, which ONNX TopK cannot reproduce); the static selection keeps the valid token.

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

    @property
    def num_levels(self) -> int:
        return self.level_filter_ratio.numel()

    def forward(
        self, salience: Sequence[Tensor], tokens: MultiLevelTokens, static_budget: bool = False
    ) -> TokenSelection:
        """Selection of every layer.

        Args:
            salience: per level, finest first, ``[B, 1, h_l, w_l]`` salience logits.
            tokens: the flattened inputs (level masks, start indices).
            static_budget: select with the canvas's static budget (see the class docstring).

        Returns:
            :class:`TokenSelection`.
        """
        if static_budget:
            return self._static_selection(salience, tokens)
        per_image, per_level = self._token_budget(tokens.level_masks)
        scores, indices = self._level_topk(salience, tokens, per_level)
        order = scores.sort(dim=1, descending=True)[1]
        ranked = indices.gather(1, order)
        counts = (ranked.shape[1] * self.layer_filter_ratio).to(torch.int64).tolist()
        return TokenSelection([ranked[:, :count] for count in counts], per_image, _foreground(salience, tokens))

    def _token_budget(self, level_masks: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """Kept tokens per image ``[B]`` and per level (batch maximum, capped at the level size)."""
        kept = self._kept(level_masks)
        sizes = [mask.shape[1] * mask.shape[2] for mask in level_masks]
        per_level = [min(int(k), size) for k, size in zip(kept.max(0)[0].tolist(), sizes)]
        return kept.sum(-1), per_level

    def _kept(self, level_masks: Sequence[Tensor]) -> Tensor:
        """``[B, L]`` kept tokens of each image and level: ``int(valid_l * level_filter_ratio_l)``."""
        valid = torch.stack([(~mask).sum((1, 2)) for mask in level_masks], -1)  # [B, L]
        return (valid * self.level_filter_ratio).int()

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

    def _static_selection(self, salience: Sequence[Tensor], tokens: MultiLevelTokens) -> TokenSelection:
        """The selection with the canvas's budgets and per-layer real counts (traceable: no size leaves a tensor)."""
        kept = self._kept(tokens.level_masks)
        scores, indices, real = [], [], []
        for level, (score, mask, start) in enumerate(zip(salience, tokens.level_masks, tokens.level_start_index)):
            size = mask.shape[1] * mask.shape[2]
            budget = min(int((torch.tensor(size) * self.level_filter_ratio[level].cpu()).int()), size)
            top_score, top_index = score.flatten(1).masked_fill(mask.flatten(1), float("-inf")).topk(budget, dim=1)
            is_real = torch.arange(budget, device=score.device)[None, :] < kept[:, level : level + 1].clamp(max=size)
            scores.append(top_score.masked_fill(~is_real, float("-inf")))
            indices.append(top_index + start)
            real.append(is_real)
        ranked = torch.cat(indices, 1).gather(1, torch.cat(scores, 1).sort(dim=1, descending=True)[1])
        num_real = torch.cat(real, 1).sum(1)  # [B]
        layer_indices, layer_counts = [], []
        for ratio in self.layer_filter_ratio:
            layer_indices.append(ranked[:, : int((torch.tensor(ranked.shape[1]) * ratio.cpu()).to(torch.int64))])
            layer_counts.append((num_real * ratio).to(torch.int64))
        return TokenSelection(layer_indices, num_real, _foreground(salience, tokens), layer_counts)


def _foreground(salience: Sequence[Tensor], tokens: MultiLevelTokens) -> Tensor:
    """``[B, S]`` salience logits of every token, padded tokens set to the minimum."""
    foreground = flatten_levels(salience).squeeze(-1)
    return foreground.masked_fill(tokens.mask, foreground.min())
