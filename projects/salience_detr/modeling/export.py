"""Salience DETR's filtered encoder with a static token budget, for ONNX export (``modeling/export.py``).

``HierarchicalTokenFilter`` keeps ``k_l = int(valid_l * ratio_l)`` tokens of level ``l`` and encoder layer ``i``
updates the first ``c_i = int(N * layer_ratio_i)`` of the ``N = sum k_l`` kept ones: sizes that depend on the
image size, which tracing would freeze. On a fixed canvas the same computation is done with the canvas's
(largest) budget ``K_l`` / ``C_i`` and masks: the tokens past ``k_l`` / ``c_i`` get a score of -inf (so they
sort last), are hidden from the selected-token self-attention by a key padding mask, are not written back and
keep their background embedding. For one image this is the eager filtered encoder, with one deliberate
difference: padded tokens score -inf here, while ``HierarchicalTokenFilter`` fills them with the level's minimum
salience. When a level keeps all its valid tokens (ratio 1.0) and its least salient valid token *is* that
minimum, the eager top-k may pick a tied padded token instead (a tie broken by torch.topk's implementation,
which ONNX TopK cannot reproduce); the graph then keeps the valid token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modeling.transformer import encoder_reference_points

from .filtered_encoder import gather_tokens

__all__ = ["static_budget_encode"]


def _static_selection(token_filter: nn.Module, salience: list[Tensor], tokens) -> tuple[list, list, Tensor]:
    """Per encoder layer, ``[B, C_i]`` token indices (best first) and ``[B]`` real counts ``c_i``; the foreground
    score ``[B, S]``. Mirrors ``HierarchicalTokenFilter.forward`` for a batch of one image."""
    valid = torch.stack([(~mask).sum((1, 2)) for mask in tokens.level_masks], -1)  # [B, L]
    kept = (valid * token_filter.level_filter_ratio).int()
    scores, indices, real = [], [], []
    for level, (score, mask, start) in enumerate(zip(salience, tokens.level_masks, tokens.level_start_index)):
        size = mask.shape[1] * mask.shape[2]
        budget = min(int((torch.tensor(size) * token_filter.level_filter_ratio[level].cpu()).int()), size)
        flat = score.flatten(1).masked_fill(mask.flatten(1), float("-inf"))
        top_score, top_index = flat.topk(budget, dim=1)
        is_real = torch.arange(budget, device=flat.device)[None, :] < kept[:, level : level + 1].clamp(max=size)
        scores.append(top_score.masked_fill(~is_real, float("-inf")))
        indices.append(top_index + start)
        real.append(is_real)
    order = torch.cat(scores, 1).sort(dim=1, descending=True)[1]
    ranked = torch.cat(indices, 1).gather(1, order)
    num_real = torch.cat(real, 1).sum(1)  # [B] = N
    num_static = ranked.shape[1]
    layer_indices, layer_counts = [], []
    for ratio in token_filter.layer_filter_ratio:
        static_count = int((torch.tensor(num_static) * ratio.cpu()).to(torch.int64))
        layer_indices.append(ranked[:, :static_count])
        layer_counts.append((num_real * ratio).to(torch.int64))
    flat_salience = torch.cat([s.flatten(2) for s in salience], -1).transpose(1, 2).squeeze(-1)
    foreground = flat_salience.masked_fill(tokens.mask, flat_salience.min())
    return layer_indices, layer_counts, foreground


def _selected_attention(module: nn.Module, query: Tensor, query_pos: Tensor, score: Tensor, real: Tensor) -> Tensor:
    """``SelectedTokenAttention.forward`` with the unreal tokens (``real`` False) hidden from the keys."""
    index = score.topk(min(module.topk, score.shape[1]), dim=1)[1]
    expand = index.unsqueeze(-1).expand(-1, -1, query.shape[-1])
    selected = query.gather(1, expand)
    with_pos = selected + query_pos.gather(1, expand)
    padding = ~real.gather(1, index)
    attended = module.attn(with_pos, with_pos, selected, key_padding_mask=padding)[0]
    selected = module.norm(selected + module.dropout(attended))
    return query.scatter(1, expand, selected)


def static_budget_encode(transformer: nn.Module, tokens) -> tuple[Tensor, dict]:
    """``SalienceTransformer.encode`` with the canvas's token budget and masks (see the comment above)."""
    backbone_memory = transformer.proposal_generator(tokens.feats + tokens.pos, tokens.mask, tokens.shapes)[0]
    salience = transformer.salience(backbone_memory, tokens)
    layer_indices, layer_counts, foreground = _static_selection(transformer.token_filter, salience, tokens)
    encoder = transformer.encoder
    reference_points = encoder_reference_points(tokens.shapes, tokens.valid_ratios)
    output = tokens.feats
    real = None
    for layer, index, count in zip(encoder.layers, layer_indices, layer_counts):
        real = torch.arange(index.shape[1], device=index.device)[None, :] < count[:, None]
        query = gather_tokens(output, index)
        score = transformer.enc_class_head(query).max(-1)[0] * foreground.gather(1, index)
        score = score.masked_fill(~real, float("-inf"))
        query_pos = gather_tokens(tokens.pos, index)
        query = _selected_attention(layer.token_attention, query, query_pos, score, real)
        query = layer.deformable(
            query,
            query_pos,
            tokens.feats,
            gather_tokens(reference_points, index),
            tokens.spatial_shapes,
            tokens.level_start_index,
            tokens.mask,
        )
        output = encoder._write_back(output, query, index, count)
    if encoder.background_embedding is not None:
        last = layer_indices[-1].unsqueeze(-1).expand(-1, -1, output.shape[-1])
        background = torch.cat(
            [encoder.background_embedding(m).flatten(2).transpose(1, 2) for m in tokens.level_masks], 1
        )
        background = background.scatter(1, last, background.gather(1, last) * (~real).unsqueeze(-1))
        output = output + background * (~tokens.mask).unsqueeze(-1)
    return output, {"salience": salience}
