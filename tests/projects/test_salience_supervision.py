"""Properties of Salience DETR's scale-independent salience targets and focal loss."""

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from projects.salience_detr.modeling import (
    DEFAULT_LIMIT_RANGE,
    SalienceLoss,
    feature_strides,
    salience_focal_loss,
    salience_target_maps,
)

PADDED = (128, 160)
SHAPES = [(16, 20), (8, 10), (4, 5), (2, 3)]


def _normalized(xyxy: list[list[float]], image_size: tuple[int, int]) -> torch.Tensor:
    """Absolute xyxy boxes -> normalised cxcywh, as DETR targets carry them."""
    boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
    h, w = image_size
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([cxcy, wh], dim=1) / torch.tensor([w, h, w, h], dtype=torch.float32)


def _maps(xyxy_per_image, image_sizes, shapes=SHAPES, padded=PADDED):
    boxes = [_normalized(b, s) for b, s in zip(xyxy_per_image, image_sizes)]
    return salience_target_maps(boxes, image_sizes, shapes, feature_strides(padded, shapes), DEFAULT_LIMIT_RANGE)


def _centres(shape, stride):
    ys = (torch.arange(shape[0]) + 0.5) * stride[0]
    xs = (torch.arange(shape[1]) + 0.5) * stride[1]
    return torch.meshgrid(ys, xs, indexing="ij")


def test_feature_strides_are_real_ratios():
    assert feature_strides((320, 416), [(40, 52), (5, 7)]) == [(8.0, 8.0), (64.0, 416 / 7)]


def test_shapes_follow_feature_maps():
    maps = _maps([[[10, 10, 50, 40]], []], [PADDED, (100, 120)])
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in SHAPES]
    assert all(m.dtype == torch.float32 for m in maps)


def test_one_at_centre_cell_and_decays_to_edge():
    # centre (36, 28) is the centre of level-0 cell (row 3, col 4); largest border distance 20 -> level 0
    level0 = _maps([[[16, 16, 56, 40]]], [PADDED])[0][0]
    assert level0[3, 4].item() == pytest.approx(1.0, abs=1e-6)
    row = level0[3, 4:7]  # cell centres x = 36, 44, 52 towards the right edge at 56
    assert torch.all(row[1:] < row[:-1]) and row[-1] > 0
    assert level0[3, 7].item() == 0  # x = 60 is outside
    assert level0.max().item() <= 1.0 and level0[level0 > 0].min().item() >= 1 - math.sqrt(2) / 2 - 1e-6


def test_target_is_scale_independent():
    small = _maps([[[12, 12, 44, 44]]], [PADDED])[0][0]  # 32 px box
    large = _maps([[[4, 4, 68, 68]]], [PADDED])[0][0]  # 64 px box
    # cell (2, 2) has its centre (20, 20) a quarter of the box size from the top-left corner in both boxes
    expected = 1 - math.sqrt(0.5**2 + 0.5**2) / 2
    assert small[2, 2].item() == pytest.approx(expected, abs=1e-6)
    assert large[2, 2].item() == pytest.approx(expected, abs=1e-6)


def test_zero_outside_boxes():
    box = [20, 30, 70, 90]
    maps = _maps([[box]], [PADDED])
    for shape, stride, level in zip(SHAPES, feature_strides(PADDED, SHAPES), maps):
        ys, xs = _centres(shape, stride)
        outside = (xs <= box[0]) | (xs >= box[2]) | (ys <= box[1]) | (ys >= box[3])
        assert torch.all(level[0][outside] == 0)


def test_each_cell_only_on_its_assigned_level():
    box = [4, 4, 124, 156]  # large: its cells spread over several levels by their largest border distance
    maps = _maps([[box]], [PADDED])
    positive_levels = 0
    for shape, stride, level, (lo, hi) in zip(SHAPES, feature_strides(PADDED, SHAPES), maps, DEFAULT_LIMIT_RANGE):
        ys, xs = _centres(shape, stride)
        distances = torch.stack([xs - box[0], ys - box[1], box[2] - xs, box[3] - ys])
        inside = distances.amin(0) > 0
        assigned = inside & (distances.amax(0) > lo) & (distances.amax(0) <= hi)
        assert torch.equal(level[0] > 0, assigned)
        positive_levels += int(assigned.any())
    assert positive_levels >= 2


def test_small_box_is_absent_from_coarse_levels():
    maps = _maps([[[40, 40, 72, 64]]], [PADDED])
    assert maps[0].max() > 0
    assert all(m.max().item() == 0 for m in maps[1:])


def test_overlapping_boxes_take_the_maximum():
    a, b = [8, 8, 72, 56], [40, 24, 104, 72]
    both = _maps([[a, b]], [PADDED])[0][0]
    only_a = _maps([[a]], [PADDED])[0][0]
    only_b = _maps([[b]], [PADDED])[0][0]
    assert torch.allclose(both, torch.maximum(only_a, only_b))


def test_padding_area_is_zero():
    image_size = (100, 120)  # second image padded to PADDED
    whole_image = [[0, 0, 120, 100]]
    maps = _maps([[], whole_image], [PADDED, image_size])
    for shape, stride, level in zip(SHAPES, feature_strides(PADDED, SHAPES), maps):
        ys, xs = _centres(shape, stride)
        padding = (ys >= image_size[0]) | (xs >= image_size[1])
        assert torch.all(level[1][padding] == 0)
        assert torch.all(level[0] == 0)
    assert any(level[1].max() > 0 for level in maps)


def test_no_objects_gives_zero_targets_and_finite_loss():
    logits = [torch.randn(2, 1, *s, requires_grad=True) for s in SHAPES]
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.zeros(0, 4)}]
    criterion = SalienceLoss()
    loss = criterion(logits, targets, feature_strides(PADDED, SHAPES), [PADDED, (100, 120)])["loss_salience"]
    maps = salience_target_maps([t["boxes"] for t in targets], [PADDED, (100, 120)], SHAPES, [(8, 8)] * 4)
    assert all(m.abs().sum() == 0 for m in maps)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in logits)


def test_focal_loss_matches_torchvision_for_hard_targets():
    torch.manual_seed(0)
    logits = [torch.randn(2, 1, *s) for s in SHAPES[:2]]
    targets = [(torch.rand(2, *s) > 0.8).float() for s in SHAPES[:2]]
    flat_logits = torch.cat([x.flatten() for x in logits])
    flat_targets = torch.cat([t.flatten() for t in targets])
    expected = sigmoid_focal_loss(flat_logits, flat_targets, alpha=0.25, gamma=2.0, reduction="sum")
    expected = expected / flat_targets.sum().clamp(min=1)
    assert salience_focal_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_target_loss_weights_both_terms():
    logits, target = torch.tensor([[0.3]]), torch.tensor([[0.6]])
    p = torch.sigmoid(logits).item()
    bce = -(0.6 * math.log(p) + 0.4 * math.log(1 - p))
    weight = 0.75 * p**2 * 0.4 + 0.25 * 0.6 * (1 - p) ** 2
    assert salience_focal_loss([logits], [target]).item() == pytest.approx(bce * weight, rel=1e-5)
