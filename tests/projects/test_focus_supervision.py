"""Focus DETR's binary, scale-assigned foreground supervision (the baseline of Salience DETR's Table 7)."""

import pytest
import torch

from modeling.transformer.multi_level import level_masks_from_image_mask
from projects.salience_detr.modeling.focus_supervision import (
    FOCUS_LIMIT_RANGE,
    FocusForegroundLoss,
    foreground_loss,
    foreground_targets,
    overlapping_limit_range,
    padding_masks,
)
from projects.salience_detr.modeling.salience_supervision import SalienceLoss, feature_strides

# 256 x 256 padded batch: strides 8, 16, 32, 64; token centres at 4 + 8k, 8 + 16k, 16 + 32k, 32 + 64k.
PADDED = (256, 256)
SHAPES = [(32, 32), (16, 16), (8, 8), (4, 4)]
STRIDES = feature_strides(PADDED, SHAPES)


def _normalized(xyxy: list[list[float]], image_size: tuple[int, int]) -> torch.Tensor:
    """Absolute xyxy boxes -> normalised cxcywh, as DETR targets carry them."""
    boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
    h, w = image_size
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([cxcy, wh], dim=1) / torch.tensor([w, h, w, h], dtype=torch.float32)


def _targets(xyxy, image_size=PADDED, shapes=SHAPES, padded=PADDED, **kwargs) -> list[torch.Tensor]:
    """Targets of one image, per level ``[h_l, w_l]``."""
    strides = feature_strides(padded, shapes)
    maps = foreground_targets([_normalized(xyxy, image_size)], [image_size], shapes, strides, **kwargs)
    return [m[0] for m in maps]


def _block(shape, rows, cols, hole=None) -> torch.Tensor:
    """``shape`` zeros with ones on ``rows x cols`` (ranges), minus ``hole`` (a pair of ranges)."""
    expected = torch.zeros(shape)
    expected[rows.start : rows.stop, cols.start : cols.stop] = 1
    if hole is not None:
        expected[hole[0].start : hole[0].stop, hole[1].start : hole[1].stop] = 0
    return expected


# ---------------------------------------------------------------- hand-computed targets


def test_small_object_lands_on_the_finest_level_only():
    # 40 px box, centre 120: max border distance in [20, 40] -> level 0 (<= 64). Level-0 centres strictly inside
    # (100, 140): 108, 116, 124, 132 (k = 13..16); level-1 centres 104, 120, 136 are inside but not assigned.
    maps = _targets([[100, 100, 140, 140]])
    assert torch.equal(maps[0], _block((32, 32), range(13, 17), range(13, 17)))
    assert all(m.sum() == 0 for m in maps[1:])


def test_medium_object_straddles_levels_0_and_1():
    # 100 px box, centre 110: max border distance d = 50 + max(|dx|, |dy|).
    # Level 0 (d <= 64): centres 100, 108, 116, 124 (k = 12..15, offsets <= 14).
    # Level 1 (64 < d <= 128): centres 72..152 (k = 4..9) except the inner 104, 120 (k = 6, 7; offsets 6, 10).
    maps = _targets([[60, 60, 160, 160]])
    assert torch.equal(maps[0], _block((32, 32), range(12, 16), range(12, 16)))
    assert torch.equal(maps[1], _block((16, 16), range(4, 10), range(4, 10), hole=(range(6, 8), range(6, 8))))
    assert maps[2].sum() == 0 and maps[3].sum() == 0


def test_large_object_straddles_levels_2_and_3_and_padding_stays_background():
    # 400 x 400 image padded to 512; box = the whole image, centre 200: d = 200 + max(|dx|, |dy|).
    # Level 2 (128 < d <= 256): centres 144, 176, 208, 240 (k = 4..7, offsets <= 56).
    # Level 3 (d > 256): centres 32..352 (k = 0..5) except 160, 224 (k = 2, 3; offsets 40, 24).
    shapes = [(64, 64), (32, 32), (16, 16), (8, 8)]
    maps = _targets([[0, 0, 400, 400]], image_size=(400, 400), shapes=shapes, padded=(512, 512))
    assert maps[0].sum() == 0 and maps[1].sum() == 0
    assert torch.equal(maps[2], _block((16, 16), range(4, 8), range(4, 8)))
    assert torch.equal(maps[3], _block((8, 8), range(0, 6), range(0, 6), hole=(range(2, 4), range(2, 4))))


def test_tokens_outside_every_box_are_background():
    boxes = [[100, 100, 140, 140], [20, 180, 60, 220]]
    maps = _targets(boxes)
    for level, (stride_y, stride_x) in enumerate(STRIDES):
        ys = (torch.arange(SHAPES[level][0]) + 0.5) * stride_y
        xs = (torch.arange(SHAPES[level][1]) + 0.5) * stride_x
        inside = torch.zeros(SHAPES[level], dtype=torch.bool)
        for x1, y1, x2, y2 in boxes:
            inside |= ((ys > y1) & (ys < y2))[:, None] & ((xs > x1) & (xs < x2))[None, :]
        assert maps[level][~inside].sum() == 0


def test_targets_are_binary_and_boxes_union():
    both = _targets([[100, 100, 140, 140], [20, 180, 60, 220]])
    first, second = _targets([[100, 100, 140, 140]]), _targets([[20, 180, 60, 220]])
    for level in range(4):
        assert set(both[level].unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(both[level], torch.maximum(first[level], second[level]))


def test_batch_of_images_with_different_sizes():
    sizes = [(256, 256), (200, 128)]
    boxes = [_normalized([[100, 100, 140, 140]], sizes[0]), _normalized([[10, 10, 50, 50]], sizes[1])]
    maps = foreground_targets(boxes, sizes, SHAPES, STRIDES)
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in SHAPES]
    assert all(m.dtype == torch.float32 for m in maps)
    # second image: centres 12, 20, 28, 36, 44 lie strictly inside (10, 50)
    assert torch.equal(maps[0][1], _block((32, 32), range(1, 6), range(1, 6)))


def test_same_binary_support_as_salience_targets():
    """Focus and Salience DETR assign alike; Salience only replaces the 1s by a continuous salience."""
    from projects.salience_detr.modeling.salience_supervision import salience_target_maps

    boxes = [_normalized([[100, 100, 140, 140], [60, 60, 160, 160], [3, 5, 250, 90]], PADDED)]
    focus = foreground_targets(boxes, [PADDED], SHAPES, STRIDES)
    salience = salience_target_maps(boxes, [PADDED], SHAPES, STRIDES, FOCUS_LIMIT_RANGE)
    for f, s in zip(focus, salience):
        assert torch.equal(f > 0, s > 0)


# ---------------------------------------------------------------- overlap and centre sampling


def test_overlapping_limit_range_values():
    assert overlapping_limit_range(FOCUS_LIMIT_RANGE, 0.0) == tuple((float(a), float(b)) for a, b in FOCUS_LIMIT_RANGE)
    assert overlapping_limit_range(FOCUS_LIMIT_RANGE, 0.5) == ((-1, 64), (32, 128), (96, 256), (192, 999999))
    with pytest.raises(ValueError, match="overlap"):
        overlapping_limit_range(FOCUS_LIMIT_RANGE, 1.5)


def test_overlapping_levels_both_get_the_object():
    # same grid on two levels, so a token can be compared across them: d = 50 + offset for the 100 px box.
    shapes = [(16, 16), (16, 16)]
    strides = feature_strides(PADDED, shapes)
    boxes = [_normalized([[60, 60, 160, 160]], PADDED)]
    disjoint = foreground_targets(boxes, [PADDED], shapes, strides, ((-1, 64), (64, 128)))
    overlapping = foreground_targets(
        boxes, [PADDED], shapes, strides, overlapping_limit_range(((-1, 64), (64, 128)), 0.5)
    )
    assert not (disjoint[0].bool() & disjoint[1].bool()).any()
    shared = overlapping[0].bool() & overlapping[1].bool()
    # inner tokens (centres 104, 120: d = 56, 60) lie in (32, 64]: foreground on both levels
    assert torch.equal(shared[0], _block((16, 16), range(6, 8), range(6, 8)).bool())
    # the union of the levels is unchanged, the overlap only adds the shared tokens to the coarser level
    assert torch.equal(disjoint[0], overlapping[0])
    assert torch.equal((overlapping[0] + overlapping[1]).clamp(max=1), (disjoint[0] + disjoint[1]).clamp(max=1))


def test_loss_overlap_argument_widens_ranges():
    assert FocusForegroundLoss(overlap=0.5).limit_range == overlapping_limit_range(FOCUS_LIMIT_RANGE, 0.5)
    assert FocusForegroundLoss().limit_range == overlapping_limit_range(FOCUS_LIMIT_RANGE, 0.0)


def test_center_sampling_keeps_tokens_near_the_centre():
    # radius 1.5 strides on level 1 (24 px) around centre 110: centres 88..120 (offsets 22, 6, 10) of the ring
    full = _targets([[60, 60, 160, 160]])
    sampled = _targets([[60, 60, 160, 160]], center_sampling_radius=1.5)
    assert torch.all(sampled[1] <= full[1])
    expected = _block((16, 16), range(5, 8), range(5, 8), hole=(range(6, 8), range(6, 8)))
    assert torch.equal(sampled[1], expected)


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("image_size", [(400, 400), (300, 350), (512, 100)])
def test_padding_masks_match_level_masks(image_size):
    shapes = [(64, 64), (32, 32), (16, 16), (8, 8)]
    image_mask = torch.ones(1, 512, 512, dtype=torch.bool)
    image_mask[0, : image_size[0], : image_size[1]] = False
    expected = level_masks_from_image_mask(image_mask, shapes)
    got = padding_masks([image_size], shapes, feature_strides((512, 512), shapes))
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_padding_is_never_foreground_and_can_be_left_out_of_the_loss():
    shapes, padded, sizes = [(16, 16), (8, 8)], (128, 128), [(96, 80)]
    strides = feature_strides(padded, shapes)
    targets = [{"boxes": _normalized([[0, 0, 80, 96]], sizes[0])}]
    loss_default = FocusForegroundLoss(limit_range=((-1, 64), (64, 999999)))
    loss_ignoring = FocusForegroundLoss(limit_range=((-1, 64), (64, 999999)), ignore_padding=True)
    maps = loss_default.targets([torch.zeros(1, 1, *s) for s in shapes], targets, strides, sizes)
    pads = padding_masks(sizes, shapes, strides)
    assert all(m[p].sum() == 0 for m, p in zip(maps, pads))

    logits = [torch.randn(1, 1, *s, generator=torch.Generator().manual_seed(0)) for s in shapes]
    changed = [x.clone() for x in logits]
    for x, p in zip(changed, pads):
        x[:, 0][p] = 5.0  # confident foreground on padding
    ignoring = [loss_ignoring(x, targets, strides, sizes)["loss_salience"] for x in (logits, changed)]
    default = [loss_default(x, targets, strides, sizes)["loss_salience"] for x in (logits, changed)]
    assert ignoring[0] == pytest.approx(ignoring[1].item())
    assert default[1] > default[0]  # Focus DETR: padded tokens are background


# ---------------------------------------------------------------- loss


def _direct_focal(logits: torch.Tensor, targets: torch.Tensor, alpha=0.25, gamma=2.0) -> torch.Tensor:
    """Focus DETR's formula: per image ``sum(-w (1 - p_t)**gamma log p_t) / max(#fg, 1)``, mean over images."""
    p = logits.sigmoid()
    p_t = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    per_token = -w * (1 - p_t) ** gamma * torch.log(p_t)
    return (per_token.sum(1) / targets.sum(1).clamp(min=1)).mean()


def test_loss_equals_direct_computation():
    generator = torch.Generator().manual_seed(1)
    shapes = [(4, 4), (2, 2)]
    logits = [torch.randn(2, 1, *s, generator=generator, dtype=torch.float64) for s in shapes]
    targets = [torch.zeros(2, *s, dtype=torch.float64) for s in shapes]
    targets[0][0, 1:3, 1:3] = 1  # image 0: 4 + 1 foreground tokens
    targets[1][0, 0, 0] = 1
    targets[0][1, 3, 0] = 1  # image 1: 1 foreground token
    flat_logits = torch.cat([x.flatten(1) for x in logits], 1)
    flat_targets = torch.cat([t.flatten(1) for t in targets], 1)
    expected = _direct_focal(flat_logits, flat_targets)
    assert foreground_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-10)
    # hand value of a single token: logit 0, foreground -> 0.25 * 0.5**2 * log 2
    one = foreground_loss([torch.zeros(1, 1, 1, 1)], [torch.ones(1, 1, 1)])
    assert one.item() == pytest.approx(0.25 * 0.25 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)


def test_loss_options():
    generator = torch.Generator().manual_seed(2)
    logits = [torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64)]
    targets = [torch.zeros(2, 4, 4, dtype=torch.float64)]
    targets[0][0, :2, :2] = 1
    targets[0][1, 0, 0] = 1
    flat_logits, flat_targets = logits[0].flatten(1), targets[0].flatten(1)
    batch = foreground_loss(logits, targets, normalization="batch")
    summed = sum(
        _direct_focal(flat_logits[i : i + 1], flat_targets[i : i + 1]) * flat_targets[i].sum() for i in range(2)
    )
    assert batch.item() == pytest.approx((summed / flat_targets.sum()).item(), rel=1e-10)
    bce = foreground_loss(logits, targets, loss_type="bce")
    direct_bce = torch.nn.functional.binary_cross_entropy_with_logits(flat_logits, flat_targets, reduction="none")
    assert bce.item() == pytest.approx((direct_bce.sum(1) / flat_targets.sum(1)).mean().item(), rel=1e-10)
    with pytest.raises(ValueError, match="loss_type"):
        foreground_loss(logits, targets, loss_type="dice")
    with pytest.raises(ValueError, match="normalization"):
        FocusForegroundLoss(normalization="mean")


def test_module_equals_targets_then_loss():
    generator = torch.Generator().manual_seed(3)
    sizes = [(256, 256), (200, 180)]
    targets = [
        {"boxes": _normalized([[100, 100, 140, 140], [60, 60, 160, 160]], sizes[0])},
        {"boxes": _normalized([[0, 0, 180, 200]], sizes[1])},
    ]
    logits = [torch.randn(2, 1, *s, generator=generator) for s in SHAPES]
    module = FocusForegroundLoss()
    got = module(logits, targets, STRIDES, sizes)
    maps = foreground_targets([t["boxes"] for t in targets], sizes, SHAPES, STRIDES)
    assert set(got) == {"loss_salience"}
    assert got["loss_salience"].item() == pytest.approx(foreground_loss(logits, maps).item(), rel=1e-6)
    flat_logits = torch.cat([x.flatten(1) for x in logits], 1).double()
    flat_targets = torch.cat([m.flatten(1) for m in maps], 1).double()
    assert got["loss_salience"].item() == pytest.approx(_direct_focal(flat_logits, flat_targets).item(), rel=1e-5)


def test_same_interface_as_salience_loss():
    sizes = [(256, 256)]
    targets = [{"boxes": _normalized([[60, 60, 160, 160]], sizes[0])}]
    logits = [torch.zeros(1, 1, *s) for s in SHAPES]
    for module in (SalienceLoss(), FocusForegroundLoss()):
        out = module(logits, targets, STRIDES, sizes)
        assert set(out) == {"loss_salience"} and out["loss_salience"].ndim == 0


def test_gradients_flow_to_every_level():
    sizes = [(256, 256), (256, 200)]
    targets = [{"boxes": _normalized([[60, 60, 160, 160]], sizes[0])}, {"boxes": torch.zeros(0, 4)}]
    logits = [torch.randn(2, 1, *s, requires_grad=True) for s in SHAPES]
    FocusForegroundLoss()(logits, targets, STRIDES, sizes)["loss_salience"].backward()
    for x in logits:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # foreground tokens are pushed up, background tokens down
    maps = foreground_targets([t["boxes"] for t in targets], sizes, SHAPES, STRIDES)
    assert (logits[1].grad[:, 0][maps[1] > 0] < 0).all() and (logits[1].grad[:, 0][maps[1] == 0] > 0).all()


def test_empty_targets():
    sizes = [(256, 256), (128, 256)]
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.zeros(0, 4)}]
    logits = [torch.randn(2, 1, *s, requires_grad=True) for s in SHAPES]
    maps = foreground_targets([t["boxes"] for t in targets], sizes, SHAPES, STRIDES)
    assert all(m.sum() == 0 for m in maps)
    loss = FocusForegroundLoss(ignore_padding=True)(logits, targets, STRIDES, sizes)["loss_salience"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in logits)


def test_mismatched_levels_fail_early():
    with pytest.raises(ValueError, match="one entry per level"):
        foreground_targets([torch.zeros(0, 4)], [PADDED], SHAPES, STRIDES, FOCUS_LIMIT_RANGE[:3])
    with pytest.raises(ValueError, match="image_sizes"):
        foreground_targets([torch.zeros(0, 4)], [PADDED, PADDED], SHAPES, STRIDES)


# ---------------------------------------------------------------- property: bigger never moves finer


def _random_box(generator, low=0.0, high=480.0) -> list[float]:
    x1, y1 = (torch.rand(2, generator=generator) * (high - 40)).tolist()
    w, h = (torch.rand(2, generator=generator) * (high - max(x1, y1)) + 1).tolist()
    return [x1, y1, min(x1 + w, high), min(y1 + h, high)]


def _grow(box, generator, high=512.0) -> list[float]:
    """A random box containing ``box``."""
    grow = (torch.rand(4, generator=generator) * 60).tolist()
    x1, y1, x2, y2 = box
    return [max(x1 - grow[0], 0.0), max(y1 - grow[1], 0.0), min(x2 + grow[2], high), min(y2 + grow[3], high)]


@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_growing_an_object_never_moves_a_token_to_a_finer_level(seed, overlap):
    """On a grid shared by every level, the levels labelling a token foreground only move coarser."""
    generator = torch.Generator().manual_seed(seed)
    shapes, padded = [(32, 32)] * 4, (512, 512)
    strides = feature_strides(padded, shapes)
    ranges = overlapping_limit_range(FOCUS_LIMIT_RANGE, overlap)
    levels = torch.arange(4, dtype=torch.float32)[:, None, None]
    for _ in range(10):
        box = _random_box(generator)
        bigger = _grow(box, generator)
        small, large = (
            torch.stack(foreground_targets([_normalized([b], padded)], [padded], shapes, strides, ranges))[:, 0]
            for b in (box, bigger)
        )  # [L, h, w]
        both = (small.sum(0) > 0) & (large.sum(0) > 0)
        finest = lambda m: torch.where(m > 0, levels, torch.inf).amin(0)  # noqa: E731
        coarsest = lambda m: torch.where(m > 0, levels, -torch.inf).amax(0)  # noqa: E731
        assert (finest(large)[both] >= finest(small)[both]).all()
        assert (coarsest(large)[both] >= coarsest(small)[both]).all()


@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_growing_an_object_never_moves_its_coarsest_level_finer(seed, overlap):
    """On the feature pyramid, an object's coarsest foreground level never gets finer as the object grows."""
    generator = torch.Generator().manual_seed(100 + seed)
    shapes, padded = [(64, 64), (32, 32), (16, 16), (8, 8)], (512, 512)
    strides = feature_strides(padded, shapes)
    ranges = overlapping_limit_range(FOCUS_LIMIT_RANGE, overlap)

    def coarsest(box):
        maps = foreground_targets([_normalized([box], padded)], [padded], shapes, strides, ranges)
        levels = [level for level, m in enumerate(maps) if m.sum() > 0]
        return max(levels) if levels else None

    for _ in range(10):
        box = _random_box(generator)
        chain = [box]
        for _ in range(4):
            chain.append(_grow(chain[-1], generator))
        assigned = [level for level in map(coarsest, chain) if level is not None]
        assert assigned == sorted(assigned), (chain, assigned)
