"""Unit tests of the box ops, the Hungarian matcher, the focal/varifocal losses and the set criterion."""

import itertools
import math

import pytest
import torch
import torchvision

from modeling import box_ops
from modeling.criterion import DetrCriterion, build_weight_dict, denoising_indices, weighted_losses
from modeling.losses import normalised_sum, sigmoid_focal_loss, varifocal_loss
from modeling.matcher import HungarianMatcher

NUM_CLASSES = 4
BASE_WEIGHTS = {"loss_class": 1, "loss_bbox": 5, "loss_giou": 2}


def _random_boxes(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Valid normalised cxcywh boxes ``[*shape, 4]``."""
    centre = torch.rand(*shape, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(*shape, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], dim=-1)


def _targets(counts, generator: torch.Generator) -> list[dict]:
    return [
        {
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=generator),
            "boxes": _random_boxes(n, generator=generator),
        }
        for n in counts
    ]


def _predictions(batch: int, queries: int, generator: torch.Generator) -> dict:
    return {
        "pred_logits": torch.randn(batch, queries, NUM_CLASSES, generator=generator),
        "pred_boxes": _random_boxes(batch, queries, generator=generator),
    }


def _criterion(class_loss: str = "varifocal_iou_aware", **kwargs) -> DetrCriterion:
    weights = build_weight_dict(BASE_WEIGHTS, num_decoder_layers=2)
    return DetrCriterion(NUM_CLASSES, HungarianMatcher(), weights, class_loss=class_loss, **kwargs)


# ---------------------------------------------------------------- box ops


def test_box_conversions_round_trip():
    boxes = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    xyxy = box_ops.box_cxcywh_to_xyxy(boxes)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.1, 0.6, 0.7]]))
    torch.testing.assert_close(box_ops.box_xyxy_to_cxcywh(xyxy), boxes)
    xywh = box_ops.box_xyxy_to_xywh(xyxy)
    torch.testing.assert_close(xywh, torch.tensor([[0.4, 0.1, 0.2, 0.6]]))
    torch.testing.assert_close(box_ops.box_xywh_to_xyxy(xywh), xyxy)
    assert box_ops.box_cxcywh_to_xyxy(torch.zeros(2, 3, 0, 4)).shape == (2, 3, 0, 4)


def test_iou_and_giou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    others = torch.tensor([[1.0, 1.0, 3.0, 3.0], [3.0, 3.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    # overlap: inter 1, union 7, hull 9; disjoint: inter 0, union 5, hull 16; identical: 1
    expected_iou = torch.tensor([[1 / 7, 0.0, 1.0]])
    expected_giou = torch.tensor([[1 / 7 - 2 / 9, 0.0 - 11 / 16, 1.0]])
    torch.testing.assert_close(box_ops.box_area(others), torch.tensor([4.0, 1.0, 4.0]))
    torch.testing.assert_close(box_ops.box_iou(a, others), expected_iou)
    torch.testing.assert_close(box_ops.generalized_box_iou(a, others), expected_giou)
    torch.testing.assert_close(box_ops.paired_generalized_box_iou(a.expand(3, 4), others), expected_giou[0])
    torch.testing.assert_close(box_ops.paired_box_iou(a.expand(3, 4), others), expected_iou[0])


def test_pairwise_ops_batched_and_equal_to_torchvision():
    g = torch.Generator().manual_seed(0)
    boxes1 = box_ops.box_cxcywh_to_xyxy(_random_boxes(2, 5, generator=g))
    boxes2 = box_ops.box_cxcywh_to_xyxy(_random_boxes(2, 3, generator=g))
    giou = box_ops.generalized_box_iou(boxes1, boxes2)
    assert giou.shape == (2, 5, 3)
    for b in range(2):
        assert torch.equal(giou[b], torchvision.ops.generalized_box_iou(boxes1[b], boxes2[b]))
        assert torch.equal(box_ops.box_iou(boxes1[b], boxes2[b]), torchvision.ops.box_iou(boxes1[b], boxes2[b]))
    diagonal = box_ops.paired_generalized_box_iou(boxes1[:, :3], boxes2)
    assert torch.equal(diagonal, torch.diagonal(giou[:, :3], dim1=-2, dim2=-1))


# ---------------------------------------------------------------- losses


def _focal_reference(x: float, t: float, alpha: float, gamma: float) -> float:
    p = 1 / (1 + math.exp(-x))
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    return bce * ((1 - alpha) * p**gamma * (1 - t) + alpha * t * (1 - p) ** gamma)


def test_focal_loss_matches_direct_formula():
    inputs = torch.tensor([[-2.0, 0.5, 3.0], [1.0, -0.3, 0.0]])
    targets = torch.tensor([[0.0, 1.0, 0.3], [1.0, 0.0, 0.7]])
    loss = sigmoid_focal_loss(inputs, targets, alpha=0.3, gamma=1.5)
    expected = [
        [_focal_reference(x, t, 0.3, 1.5) for x, t in zip(row_x, row_t)]
        for row_x, row_t in zip(inputs.tolist(), targets.tolist())
    ]
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(sigmoid_focal_loss(inputs, targets, 0.3, 1.5, "sum"), loss.sum())
    torch.testing.assert_close(sigmoid_focal_loss(inputs, targets, 0.3, 1.5, "mean"), loss.mean())
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(inputs, targets, reduction="avg")


def test_focal_loss_equals_torchvision_for_binary_targets():
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 5, generator=g)
    targets = (torch.rand(3, 5, generator=g) > 0.5).float()
    ours = sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(ours, torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0))


def test_varifocal_loss_matches_direct_formula():
    inputs = torch.tensor([[0.4, -1.0], [2.0, 0.1]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    quality = torch.tensor([0.6, 0.0])
    loss = varifocal_loss(inputs, targets, quality, alpha=0.25, gamma=2.0)
    expected = []
    for row_x, row_t, q in zip(inputs.tolist(), targets.tolist(), quality.tolist()):
        row = []
        for x, t in zip(row_x, row_t):
            p, score = 1 / (1 + math.exp(-x)), t * q
            bce = -(score * math.log(p) + (1 - score) * math.log(1 - p))
            row.append(bce * (0.75 * p**2 * (1 - t) + score))
        expected.append(row)
    torch.testing.assert_close(loss, torch.tensor(expected))
    loss.sum().backward()
    assert torch.isfinite(inputs.grad).all()


def test_normalised_sum_is_sum_over_normaliser():
    loss = torch.rand(2, 7, 3)
    torch.testing.assert_close(normalised_sum(loss, 4.0), loss.sum() / 4.0)
    assert float(normalised_sum(torch.zeros(2, 0, 3), 1.0)) == 0.0


# ---------------------------------------------------------------- matcher


def test_matcher_cost_matches_definition():
    g = torch.Generator().manual_seed(2)
    logits, boxes = torch.randn(3, NUM_CLASSES, generator=g), _random_boxes(3, generator=g)
    labels, gt_boxes = torch.tensor([1, 3]), _random_boxes(2, generator=g)
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2, focal_alpha=0.25, focal_gamma=2.0)
    cost = matcher.cost_matrix(logits, boxes, labels, gt_boxes)
    giou = torchvision.ops.generalized_box_iou(
        torchvision.ops.box_convert(boxes, "cxcywh", "xyxy"), torchvision.ops.box_convert(gt_boxes, "cxcywh", "xyxy")
    )
    for q, t in itertools.product(range(3), range(2)):
        p = torch.sigmoid(logits[q, labels[t]]).item()
        positive = -0.25 * (1 - p) ** 2 * math.log(p + 1e-6)
        negative = -0.75 * p**2 * math.log(1 - p + 1e-6)
        l1 = (boxes[q] - gt_boxes[t]).abs().sum().item()
        expected = 5 * l1 + 2 * (positive - negative) - 2 * giou[q, t].item()
        assert cost[q, t].item() == pytest.approx(expected, abs=1e-5)


def test_matcher_is_optimal_against_brute_force():
    g = torch.Generator().manual_seed(3)
    matcher = HungarianMatcher()
    for _ in range(3):
        logits, boxes = torch.randn(5, NUM_CLASSES, generator=g), _random_boxes(5, generator=g)
        labels, gt_boxes = torch.randint(0, NUM_CLASSES, (3,), generator=g), _random_boxes(3, generator=g)
        cost = matcher.cost_matrix(logits, boxes, labels, gt_boxes)
        pred_idx, tgt_idx = matcher.match_single(logits, boxes, labels, gt_boxes)
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert sorted(tgt_idx.tolist()) == [0, 1, 2] and len(set(pred_idx.tolist())) == 3
        best = min(sum(cost[q, t].item() for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3))
        assert cost[pred_idx, tgt_idx].sum().item() == pytest.approx(best, abs=1e-5)


def test_matcher_more_targets_than_queries_and_empty_targets():
    g = torch.Generator().manual_seed(4)
    outputs = _predictions(2, 2, g)
    targets = _targets([3, 0], g)
    indices = HungarianMatcher()(outputs["pred_logits"], outputs["pred_boxes"], targets)
    assert len(indices[0][0]) == 2 and len(set(indices[0][1].tolist())) == 2
    assert indices[1][0].shape == indices[1][1].shape == (0,)
    assert indices[1][0].dtype == torch.int64


def test_matcher_rejects_bad_input():
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(0, 0, 0)
    matcher = HungarianMatcher()
    logits = torch.full((2, NUM_CLASSES), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        matcher.match_single(logits, torch.rand(2, 4), torch.tensor([0]), torch.rand(1, 4))
    g = torch.Generator().manual_seed(5)
    outputs = _predictions(2, 3, g)
    with pytest.raises(ValueError, match="targets for a batch"):
        matcher(outputs["pred_logits"], outputs["pred_boxes"], _targets([1], g))


# ---------------------------------------------------------------- weight dict


def test_build_weight_dict():
    weights = build_weight_dict(BASE_WEIGHTS, num_decoder_layers=2, extra_weights={"loss_salience": 2})
    expected_keys = [
        *BASE_WEIGHTS,
        *(k + "_dn" for k in BASE_WEIGHTS),
        *(k + "_0" for k in BASE_WEIGHTS),
        *(k + "_dn_0" for k in BASE_WEIGHTS),
        *(k + "_enc" for k in BASE_WEIGHTS),
        "loss_salience",
    ]
    assert list(weights) == expected_keys
    assert weights["loss_bbox_dn_0"] == 5 and weights["loss_giou_enc"] == 2 and weights["loss_salience"] == 2

    six_layers = build_weight_dict(BASE_WEIGHTS, num_decoder_layers=6, denoising=False, two_stage=False)
    assert len(six_layers) == 3 * 6 and "loss_class_4" in six_layers and "loss_class_5" not in six_layers

    hybrid = build_weight_dict(BASE_WEIGHTS, num_decoder_layers=2, hybrid_suffix="_hybrid")
    assert len(hybrid) == 2 * 15 and hybrid["loss_giou_enc_hybrid"] == 2 and hybrid["loss_bbox_0_hybrid"] == 5
    with pytest.raises(ValueError):
        build_weight_dict(BASE_WEIGHTS, num_decoder_layers=0)


def test_weighted_losses():
    losses = {"loss_class": torch.tensor(2.0), "loss_bbox": torch.tensor(0.5)}
    weighted = weighted_losses(losses, BASE_WEIGHTS)
    assert weighted == {"loss_class": torch.tensor(2.0), "loss_bbox": torch.tensor(2.5)}
    with pytest.raises(KeyError, match="loss_other"):
        weighted_losses({**losses, "loss_other": torch.tensor(1.0)}, BASE_WEIGHTS)
    assert set(weighted_losses({**losses, "loss_other": torch.tensor(1.0)}, BASE_WEIGHTS, strict=False)) == set(losses)


# ---------------------------------------------------------------- criterion


def _full_outputs(batch: int, queries: int, g: torch.Generator, requires_grad: bool = False) -> dict:
    outputs = _predictions(batch, queries, g)
    outputs["aux_outputs"] = [_predictions(batch, queries, g)]
    outputs["enc_outputs"] = _predictions(batch, queries, g)
    if requires_grad:
        for part in (outputs, outputs["aux_outputs"][0], outputs["enc_outputs"]):
            part["pred_logits"].requires_grad_(True)
            part["pred_boxes"].requires_grad_(True)
    return outputs


@pytest.mark.parametrize("class_loss", ["focal", "varifocal_iou_aware"])
def test_criterion_keys_and_finite_gradients(class_loss):
    g = torch.Generator().manual_seed(6)
    outputs = _full_outputs(2, 6, g, requires_grad=True)
    criterion = _criterion(class_loss)
    losses = criterion(outputs, _targets([3, 0], g))
    stems = ("loss_class", "loss_bbox", "loss_giou")
    assert set(losses) == {s + suffix for s in stems for suffix in ("", "_0", "_enc")}
    total = sum(criterion.weighted(losses).values())
    total.backward()
    for part in (outputs, outputs["aux_outputs"][0], outputs["enc_outputs"]):
        assert torch.isfinite(part["pred_logits"].grad).all() and part["pred_logits"].grad.abs().sum() > 0
        assert torch.isfinite(part["pred_boxes"].grad).all() and part["pred_boxes"].grad.abs().sum() > 0


def test_focal_class_loss_matches_formula():
    g = torch.Generator().manual_seed(7)
    outputs, targets = _predictions(2, 5, g), _targets([2, 1], g)
    criterion = _criterion("focal", losses=("class",))
    indices = criterion.matcher(outputs["pred_logits"], outputs["pred_boxes"], targets)
    onehot = torch.zeros_like(outputs["pred_logits"])
    for b, (q, t) in enumerate(indices):
        onehot[b, q, targets[b]["labels"][t]] = 1
    expected = torchvision.ops.sigmoid_focal_loss(outputs["pred_logits"], onehot, reduction="sum") / 3
    losses = criterion(outputs, targets)
    assert set(losses) == {"loss_class"}
    torch.testing.assert_close(losses["loss_class"], expected)


def test_criterion_without_any_target_is_finite():
    g = torch.Generator().manual_seed(8)
    losses = _criterion()(_full_outputs(2, 4, g), _targets([0, 0], g))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0 and losses["loss_class"] > 0


def test_criterion_binary_two_stage_targets():
    g = torch.Generator().manual_seed(9)
    outputs, targets = _full_outputs(1, 4, g), _targets([2], g)
    outputs["enc_outputs"]["pred_logits"] = torch.randn(1, 4, 1, generator=g)
    losses = _criterion(two_stage_binary_cls=True)(outputs, targets)
    assert torch.isfinite(losses["loss_class_enc"])


def test_criterion_rejects_bad_targets():
    g = torch.Generator().manual_seed(10)
    outputs = _predictions(1, 4, g)
    with pytest.raises(ValueError, match="labels outside"):
        _criterion()(outputs, [{"labels": torch.tensor([NUM_CLASSES]), "boxes": torch.rand(1, 4)}])
    with pytest.raises(ValueError, match="boxes"):
        _criterion()(outputs, [{"labels": torch.tensor([0]), "boxes": torch.rand(2, 4)}])
    with pytest.raises(ValueError, match="classes"):
        _criterion()({**outputs, "pred_logits": torch.rand(1, 4, 2)}, _targets([1], g))
    with pytest.raises(ValueError):
        DetrCriterion(NUM_CLASSES, HungarianMatcher(), {}, class_loss="softmax")


# ---------------------------------------------------------------- denoising


def _dn_metas(batch: int, groups: int, slots: int, g: torch.Generator, layers: int = 2) -> dict:
    predictions = [_predictions(batch, groups * slots, g) for _ in range(layers)]
    output = {**predictions[-1], "aux_outputs": predictions[:-1]}
    return {"denoising_output": output, "denoising_groups": groups, "max_gt_num_per_image": slots}


def test_denoising_indices_are_group_major():
    targets = [{"labels": torch.tensor([1, 2])}, {"labels": torch.zeros(0, dtype=torch.int64)}]
    (query0, tgt0), (query1, tgt1) = denoising_indices(targets, 3, 4, torch.device("cpu"))
    assert query0.tolist() == [0, 1, 4, 5, 8, 9] and tgt0.tolist() == [0, 1, 0, 1, 0, 1]
    assert query1.numel() == tgt1.numel() == 0 and query1.dtype == torch.int64


def test_denoising_losses_keys_and_values():
    g = torch.Generator().manual_seed(11)
    targets = _targets([2, 0], g)
    dn_metas = _dn_metas(2, groups=3, slots=4, g=g)
    outputs = {**_full_outputs(2, 5, g), "dn_metas": dn_metas}
    losses = _criterion()(outputs, targets)
    stems = ("loss_class", "loss_bbox", "loss_giou")
    expected_keys = {s + suffix for s in stems for suffix in ("", "_0", "_enc", "_dn", "_dn_0")}
    assert set(losses) == expected_keys

    boxes = dn_metas["denoising_output"]["pred_boxes"][0]
    l1 = sum((boxes[group * 4 + j] - targets[0]["boxes"][j]).abs().sum() for group in range(3) for j in range(2))
    torch.testing.assert_close(losses["loss_bbox_dn"], l1 / (2 * 3))
    assert all(torch.isfinite(v) for v in losses.values())


def test_denoising_losses_with_zero_groups_or_no_output():
    g = torch.Generator().manual_seed(12)
    targets = _targets([2, 1], g)
    criterion = _criterion()
    losses = criterion.denoising_losses(_dn_metas(2, groups=0, slots=4, g=g), targets)
    assert set(losses) == {s + suffix for s in ("loss_class", "loss_bbox", "loss_giou") for suffix in ("_dn", "_dn_0")}
    assert all(float(v) == 0.0 for v in losses.values())
    assert criterion.denoising_losses({"denoising_groups": 2, "max_gt_num_per_image": 4}, targets) == {}
