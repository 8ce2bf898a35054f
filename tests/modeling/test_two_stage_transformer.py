"""The shared two-stage DETR core: multi-level geometry, proposals, decoder refinement, the plain skeleton."""

import math

import pytest
import torch
from torchvision.ops import box_iou

from modeling.criterion import DetrCriterion, build_weight_dict
from modeling.denoising import ContrastiveDenoising
from modeling.layers import MultiScaleDeformableAttention, PositionEmbeddingSine
from modeling.matcher import HungarianMatcher
from modeling.meta_arch import TwoStageDETR
from modeling.postprocess import topk_detections
from modeling.transformer import (
    FFN,
    DeformableDecoder,
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    ProposalGenerator,
    QuerySelfAttention,
    TopKQuerySelector,
    TwoStageTransformer,
    encoder_reference_points,
    flatten_levels,
    grid_proposals,
    inverse_sigmoid,
    level_masks_from_image_mask,
    unflatten_levels,
    valid_ratios,
)

SHAPES = [(8, 10), (4, 5)]


def _masks(valid):
    """Level masks for images whose valid part is ``valid[b] = (h, w)`` of the finest level (coarser: halved)."""
    masks = []
    for level, (height, width) in enumerate(SHAPES):
        mask = torch.ones(len(valid), height, width, dtype=torch.bool)
        for b, (vh, vw) in enumerate(valid):
            mask[b, : math.ceil(vh / 2**level), : math.ceil(vw / 2**level)] = False
        masks.append(mask)
    return masks


def test_flatten_unflatten_round_trip():
    maps = [torch.randn(2, 3, h, w) for h, w in SHAPES]
    tokens = flatten_levels(maps)
    assert tokens.shape == (2, 8 * 10 + 4 * 5, 3)
    assert torch.equal(tokens[:, 1], maps[0][:, :, 0, 1])
    for back, original in zip(unflatten_levels(tokens, SHAPES), maps):
        assert torch.equal(back, original)
    assert flatten_levels(_masks([(8, 10), (4, 6)])).shape == (2, 100)


def test_level_masks_and_valid_ratios():
    image_mask = torch.ones(1, 64, 80, dtype=torch.bool)
    image_mask[:, :32, :40] = False
    masks = level_masks_from_image_mask(image_mask, SHAPES)
    assert [tuple(m.shape[1:]) for m in masks] == SHAPES
    assert torch.allclose(valid_ratios(masks), torch.tensor([[[0.5, 0.5], [0.6, 0.5]]]))


def test_encoder_reference_points_are_cell_centres_over_valid_size():
    masks = _masks([(8, 10), (4, 6)])
    points = encoder_reference_points(SHAPES, valid_ratios(masks))
    assert points.shape == (2, 100, 2, 2)
    assert torch.allclose(points[0, 0, 0], torch.tensor([0.05, 1 / 16]))  # unpadded: centre / size
    assert torch.allclose(points[1, 0, 0], torch.tensor([0.5 / 6, 0.5 / 4]) * torch.tensor([0.6, 0.5]))


def test_grid_proposals_and_generator_mask_invalid_tokens():
    mask = flatten_levels(_masks([(8, 10), (4, 6)]))
    proposals = grid_proposals(mask, SHAPES)
    assert torch.allclose(proposals[0, 0], torch.tensor([0.05, 1 / 16, 0.05, 0.05]))
    assert torch.allclose(proposals[0, 80], torch.tensor([0.1, 0.125, 0.1, 0.1]))
    generator = ProposalGenerator(embed_dim=4)
    memory, logits = generator(torch.randn(2, 100, 4), mask, SHAPES)
    assert memory.shape == (2, 100, 4)
    assert torch.isinf(logits[mask]).all() and torch.isfinite(logits[1, 0]).all()
    corner = 8 * 10 - 1  # centre (0.95, 0.9375) of image 0: valid; of image 1: padding
    assert torch.isfinite(logits[0, corner]).all() and torch.isinf(logits[1, corner]).all()


def test_inverse_sigmoid_clamps():
    x = torch.tensor([-1.0, 0.0, 0.5, 0.9, 2.0])
    expected = torch.tensor([math.log(1e-3), math.log(1e-3), 0.0, math.log(9.0), math.log(1 / 1e-3)])
    assert torch.allclose(inverse_sigmoid(x), expected, atol=1e-5)


def _tokens(batch=2):
    transformer = _transformer()
    masks = _masks([(8, 10), (5, 7)][:batch])
    feats = [torch.randn(batch, 32, h, w) for h, w in SHAPES]
    pos = [torch.randn(batch, 32, h, w) for h, w in SHAPES]
    return transformer, transformer.flatten_inputs(feats, masks, pos)


def _deformable():
    return MultiScaleDeformableAttention(32, 4, num_levels=2, num_points=2)


def _transformer(num_queries=10):
    encoder = DeformableEncoder(DeformableEncoderLayer(_deformable(), FFN(32, 64)), num_layers=2)
    layer = DeformableDecoderLayer(QuerySelfAttention(32, 4), _deformable(), FFN(32, 64))
    decoder = DeformableDecoder(layer, 2, num_classes=3)
    return TwoStageTransformer(
        encoder, decoder, num_classes=3, embed_dim=32, num_feature_levels=2, num_queries=num_queries
    )


def test_decoder_looks_forward_twice():
    torch.manual_seed(0)
    transformer, tokens = _tokens()
    decoder = transformer.decoder
    for head in decoder.box_heads:
        torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    reference = torch.rand(2, 6, 4) * 0.5 + 0.25
    logits, boxes = decoder(torch.randn(2, 6, 32), reference, tokens.feats, tokens)
    assert logits.shape == (2, 2, 6, 3) and boxes.shape == (2, 2, 6, 4)
    boxes[1].sum().backward()
    # layer 1's boxes start from layer 0's refinement, not detached: box head 0 gets a gradient
    assert decoder.box_heads[0].layers[-1].weight.grad.abs().sum() > 0
    assert decoder.class_heads[0].weight.grad is None


def test_topk_selector_and_transformer_forward():
    torch.manual_seed(0)
    transformer, tokens = _tokens()
    index = TopKQuerySelector(5)(torch.randn(2, 100, 3), tokens)
    assert index.shape == (2, 5)
    feats = [torch.randn(2, 32, h, w) for h, w in SHAPES]
    output = transformer(feats, tokens.level_masks, [torch.zeros_like(f) for f in feats])
    assert output.dec_logits.shape == (2, 2, 10, 3) and output.enc_boxes.shape == (2, 10, 4)
    assert output.token_scores is None and output.branches == {}


def test_topk_detections_orders_query_class_pairs():
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 1, 2] = 2.0
    logits[0, 0, 0] = 1.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0]]])
    result = topk_detections(logits, boxes, [(100, 200)], num_detections=2)[0]
    assert result["labels"].tolist() == [2, 0]
    assert torch.allclose(result["scores"], torch.sigmoid(torch.tensor([2.0, 1.0])))
    assert torch.allclose(result["boxes"], torch.tensor([[0.0, 0.0, 100.0, 100.0], [80.0, 30.0, 120.0, 70.0]]))
    assert len(topk_detections(logits, boxes, [(1, 1)], num_detections=50)[0]["scores"]) == 6


def test_topk_detections_without_duplicates_keeps_the_best_of_each_overlapping_group():
    """Class-agnostic NMS after the top-k: of two boxes with IoU above the threshold the lower-scoring one goes,
    whatever its label; boxes that overlap less stay; the kept ones stay in score order."""
    boxes = torch.tensor(
        [[[0.30, 0.30, 0.20, 0.20], [0.31, 0.30, 0.20, 0.20], [0.70, 0.70, 0.20, 0.20], [0.38, 0.30, 0.20, 0.20]]]
    )  # query 1 is a near copy of query 0 (IoU 0.9); query 3 overlaps queries 0 and 1 with IoU 0.43 and 0.48
    logits = torch.full((1, 4, 2), -10.0)
    logits[0, :, 0] = torch.tensor([1.0, 2.0, 0.5, 0.0])
    logits[0, 0, 1] = 1.5  # query 0 also as class 1: the same box, suppressed by query 1's class 0
    plain = topk_detections(logits, boxes, [(100, 200)], num_detections=5)[0]
    kept = topk_detections(logits, boxes, [(100, 200)], num_detections=5, nms_iou_threshold=0.5)[0]
    assert plain["scores"].tolist() == sorted(plain["scores"].tolist(), reverse=True) and len(plain["scores"]) == 5
    iou = box_iou(plain["boxes"], plain["boxes"])
    expected = [
        i
        for i in range(5)
        if not any(iou[j, i] > 0.5 for j in range(i))  # greedy NMS by rank, written out
    ]
    assert expected == [0, 3, 4]  # query 1 class 0, query 2 class 0, query 3 class 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(kept[key], plain[key][expected]), key
    loose = topk_detections(logits, boxes, [(100, 200)], num_detections=5, nms_iou_threshold=0.95)[0]
    assert len(loose["scores"]) == 4  # only the identical box (query 0 as class 1 vs class 0) goes


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, "0.7", True])
def test_nms_iou_threshold_must_be_an_iou(value, plain_detr):
    with pytest.raises(ValueError, match=r"nms_iou_threshold must be None .* IoU in \(0, 1\]"):
        topk_detections(torch.zeros(1, 2, 3), torch.rand(1, 2, 4), [(10, 10)], nms_iou_threshold=value)
    with pytest.raises(ValueError, match=r"model\.nms_iou_threshold must be"):
        TwoStageDETR(
            plain_detr.backbone,
            plain_detr.neck,
            plain_detr.position_embedding,
            plain_detr.transformer,
            plain_detr.criterion,
            3,
            nms_iou_threshold=value,
        )


@pytest.fixture(scope="module")
def plain_detr():
    """A plain two-stage DETR (no Salience parts) on a small random backbone."""
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, stride=8, padding=1), torch.nn.ReLU())

    class TwoLevels(torch.nn.Module):
        def forward(self, x):
            return [x, torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True)]

    criterion = DetrCriterion(
        3, HungarianMatcher(), build_weight_dict({"loss_class": 1, "loss_bbox": 5, "loss_giou": 2}, 2)
    )
    return TwoStageDETR(
        backbone=backbone,
        neck=TwoLevels(),
        position_embedding=PositionEmbeddingSine(16, normalize=True, offset=-0.5),
        transformer=_transformer(num_queries=20),
        criterion=criterion,
        num_classes=3,
        denoising=ContrastiveDenoising(num_queries=20, num_classes=3, embed_dim=32, denoising_nums=6),
        num_detections=10,
    )


def _inputs():
    return [
        {
            "image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8),
            "height": 32,
            "width": 48,
            "boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]),
            "labels": torch.tensor([1]),
        },
        {
            "image": torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8),
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]


def test_plain_two_stage_detr_trains_and_infers(plain_detr):
    plain_detr.train()
    losses = plain_detr(_inputs())
    assert {"loss_class", "loss_giou_0", "loss_bbox_enc", "loss_class_dn", "loss_giou_dn_0"} <= set(losses)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in plain_detr.parameters() if p.requires_grad)
    plain_detr.eval()
    with torch.no_grad():
        detections = plain_detr(_inputs())
        raw = plain_detr.predict(_inputs())
    assert [d["boxes"].shape for d in detections] == [(10, 4), (10, 4)]
    assert raw.dec_logits.shape == (2, 2, 20, 3)
    # original size 32 x 48 is half the input: boxes are reported in original pixels
    assert bool((detections[0]["boxes"][:, 0::2] <= 48 * 1.5).all())


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_ffn_in_place_relu_equals_the_out_of_place_formula(layout):
    """The FFN rectifies linear1's output in place (on a 2-D view of its input); values and every gradient equal
    the written-out formula, for a contiguous input and a transposed (non-contiguous) one."""
    torch.manual_seed(0)
    ffn = FFN(16, 48).double()
    assert ffn.activation.inplace
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    x = (x if layout == "contiguous" else x.transpose(0, 1).contiguous().transpose(0, 1)).requires_grad_()
    out = ffn(x)
    assert out.shape == x.shape
    grads = torch.autograd.grad(out.square().sum(), [x, *ffn.parameters()])
    hidden = torch.relu(torch.nn.functional.linear(x, ffn.linear1.weight, ffn.linear1.bias))
    expected = ffn.norm(x + torch.nn.functional.linear(hidden, ffn.linear2.weight, ffn.linear2.bias))
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *ffn.parameters()])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-13)
