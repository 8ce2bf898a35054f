"""Salience DETR's additions, one by one: redundancy removal, token filtering, background embedding, fusion."""

import os

import pytest
import torch

from modeling.transformer import MultiLevelTokens, flatten_levels, valid_ratios
from projects.salience_detr.modeling import (
    BackgroundEmbedding,
    HierarchicalTokenFilter,
    RedundancyRemovalSelector,
    RepVGGPluXNetwork,
    TopDownSalience,
    filtered_encoder,
    unit_boxes,
)
from scripts.convert_checkpoint import load_official_checkpoint, main
from tests.parity_fixtures import fixture_dir

SHAPES = [(4, 6), (2, 3)]


def _tokens(level_masks, embed_dim=8):
    batch = level_masks[0].shape[0]
    shapes = torch.tensor([m.shape[1:] for m in level_masks])
    sizes = shapes.prod(1)
    return MultiLevelTokens(
        feats=torch.randn(batch, int(sizes.sum()), embed_dim),
        pos=torch.randn(batch, int(sizes.sum()), embed_dim),
        mask=flatten_levels(level_masks),
        level_masks=list(level_masks),
        spatial_shapes=shapes,
        level_start_index=torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
        valid_ratios=valid_ratios(level_masks),
    )


def _unpadded(batch=1):
    return _tokens([torch.zeros(batch, h, w, dtype=torch.bool) for h, w in SHAPES])


def test_unit_boxes_are_in_cells_of_their_level():
    level, boxes = unit_boxes(torch.tensor([0, 7, 24, 29]), _unpadded())
    assert level.tolist() == [0, 0, 1, 1]
    assert boxes.tolist() == [[-1, -1, 1, 1], [0, 0, 2, 2], [-1, -1, 1, 1], [1, 0, 3, 2]]


def test_redundancy_removal_suppresses_neighbours_within_a_level_only():
    tokens = _unpadded()
    logits = torch.full((1, 30, 2), -5.0)
    logits[0, 0, 0], logits[0, 1, 1], logits[0, 7, 0], logits[0, 24, 0] = 4.0, 3.0, 2.0, 1.0
    selector = RedundancyRemovalSelector(num_queries=3, candidate_factor=2, iou_threshold=0.3)
    # token 1 (right neighbour of 0, IoU 1/3) is suppressed; 7 (diagonal, IoU 1/7) and 24 (level 1) survive
    assert selector(logits, tokens).tolist() == [[0, 7, 24]]


def test_redundancy_removal_fills_with_suppressed_candidates_and_switches_levels():
    tokens = _unpadded()
    logits = torch.full((1, 30, 2), -5.0)
    logits[0, 0, 0], logits[0, 1, 0], logits[0, 24, 0] = 4.0, 3.0, 2.0
    selector = RedundancyRemovalSelector(num_queries=3, candidate_factor=1, iou_threshold=0.3)
    assert selector(logits, tokens).tolist() == [[0, 24, 1]]
    across_levels = RedundancyRemovalSelector(3, candidate_factor=1, iou_threshold=0.3, level_wise=False)
    assert across_levels(logits, tokens).tolist() == [[0, 1, 24]]  # token 24's unit box equals token 0's


def test_token_filter_budgets_levels_and_layers():
    masks = [torch.zeros(2, h, w, dtype=torch.bool) for h, w in SHAPES]
    masks[0][1, :, 3:] = True  # image 1: half of level 0 is padding
    masks[1][1, :, 2:] = True
    tokens = _tokens(masks)
    salience = [torch.randn(2, 1, h, w) for h, w in SHAPES]
    selection = HierarchicalTokenFilter([0.5, 1.0], [1.0, 0.5])(salience, tokens)
    assert selection.focus_counts.tolist() == [12 + 6, 6 + 4]
    assert [index.shape for index in selection.layer_indices] == [(2, 18), (2, 9)]
    flat = flatten_levels(salience).squeeze(-1)
    ranked = flat.gather(1, selection.layer_indices[0][:1])
    assert bool((ranked[0, :-1] >= ranked[0, 1:]).all())  # most salient first
    assert selection.foreground_score[1, tokens.mask[1]].eq(flat.min()).all()


def test_encoder_writes_back_only_focus_tokens():
    output = torch.zeros(2, 5, 3)
    query = torch.ones(2, 3, 3)
    index = torch.tensor([[4, 0, 2], [1, 3, 0]])
    written = filtered_encoder._write_back(output, query, index, torch.tensor([2, 3]))
    assert written[0, :, 0].tolist() == [1, 0, 0, 0, 1]
    assert written[1, :, 0].tolist() == [1, 1, 0, 1, 0]


def test_background_embedding_absolute_and_relative():
    absolute = BackgroundEmbedding(num_embeddings=10, embed_dim=4)
    embedding = absolute(torch.zeros(2, 3, 5, dtype=torch.bool))
    assert embedding.shape == (2, 4, 3, 5)
    assert torch.equal(embedding[0, :2, 1, 4], absolute.col_embed.weight[4])
    assert torch.equal(embedding[0, 2:, 1, 4], absolute.row_embed.weight[1])
    with pytest.raises(ValueError, match="num_embeddings"):
        absolute(torch.zeros(1, 3, 11, dtype=torch.bool))
    relative = BackgroundEmbedding(num_embeddings=10, embed_dim=4, relative=True)
    small, large = torch.zeros(1, 2, 5, dtype=torch.bool), torch.zeros(1, 6, 15, dtype=torch.bool)
    assert torch.equal(relative(small)[0, :, 0, 2], relative(large)[0, :, 1, 7])  # same relative position
    assert relative(torch.zeros(1, 30, 40, dtype=torch.bool)).shape == (1, 4, 30, 40)


def test_top_down_switch_and_salience_shapes():
    tokens = _unpadded(batch=2)
    for top_down in (True, False):
        salience = TopDownSalience(embed_dim=8, num_levels=2, top_down=top_down)
        maps = salience(tokens.feats, tokens)
        assert [tuple(m.shape) for m in maps] == [(2, 1, 4, 6), (2, 1, 2, 3)]
        sum(m.sum() for m in maps).backward()
        assert (salience.alpha.grad is not None) == top_down


def test_token_fusion_keeps_shapes():
    network = RepVGGPluXNetwork(channels=32, num_levels=3, groups=4).eval()
    maps = [torch.randn(1, 32, 8, 10), torch.randn(1, 32, 4, 5), torch.randn(1, 32, 2, 3)]
    assert [m.shape for m in network(maps)] == [m.shape for m in maps]


def test_converter_command_line(tmp_path):
    source = os.path.join(fixture_dir("salience_detr_tiny"), "official_checkpoint.pth")
    target = tmp_path / "converted.pth"
    main(["--input", source, "--output", str(target), "--model", "salience_detr"])
    converted = torch.load(target, weights_only=True)["model"]
    official = load_official_checkpoint(source)
    assert len(converted) == len(official) - 2  # the two aliased encoder-class-head keys are dropped
    assert torch.equal(converted["transformer.encoder.salience.alpha"], official["transformer.alpha"].float())
