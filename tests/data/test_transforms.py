"""Augmentations: boxes follow the image exactly (hand-computed expectations)."""

import pytest
import torch
from torchvision import tv_tensors

from data.transforms import (
    Crop,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    build_augmentation,
    drop_small_boxes,
    shortest_edge_size,
)


def make_sample(h, w, boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.arange(len(boxes)) + 10 if labels is None else torch.tensor(labels)
    image = torch.arange(3 * h * w, dtype=torch.int64).reshape(3, h, w).remainder(251).to(torch.uint8)
    return {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": labels,
        "image_id": 7,
    }


def test_resize_known_scale():
    out = ResizeShortestEdge(200)(make_sample(100, 150, [[10, 20, 50, 60]]))
    assert out["image"].shape == (3, 200, 300)
    assert out["image"].dtype == torch.uint8
    torch.testing.assert_close(out["boxes"], torch.tensor([[20.0, 40.0, 100.0, 120.0]]))
    assert out["boxes"].canvas_size == (200, 300)
    assert out["labels"].tolist() == [10] and out["image_id"] == 7


def test_resize_max_size_clamp_and_rounding():
    # scale 800/333 would give a long edge of 1201 > 1000, so scale = 1000/500 = 2.0 -> (666, 1000)
    assert shortest_edge_size(333, 500, 800, 1000) == (666, 1000)
    # rounds to nearest: short 4 for (3, 5): scale 4/3, w = 6.667 -> 7 (not truncated to 6)
    assert shortest_edge_size(3, 5, 4, 10**6) == (4, 7)
    # and down: short 100 for (99, 148): scale 1.0101, w = 149.495 -> 149
    assert shortest_edge_size(99, 148, 100, 10**6) == (100, 149)
    # the clamp sees the unrounded long edge: (100, 150) to short 200 -> long 300 <= 300, no clamp
    assert shortest_edge_size(100, 150, 200, 300) == (200, 300)
    out = ResizeShortestEdge(800, max_size=1000)(make_sample(333, 500, [[0, 0, 500, 333], [100, 33.3, 200, 66.6]]))
    assert out["image"].shape == (3, 666, 1000)
    sx, sy = 1000 / 500, 666 / 333
    expected = torch.tensor([[0, 0, 500 * sx, 333 * sy], [100 * sx, 33.3 * sy, 200 * sx, 66.6 * sy]])
    torch.testing.assert_close(out["boxes"], expected)


def test_resize_sampling_styles():
    torch.manual_seed(0)
    choice = ResizeShortestEdge([100, 120], sample_style="choice")
    shorts = {min(choice(make_sample(50, 80, []))["image"].shape[-2:]) for _ in range(20)}
    assert shorts == {100, 120}
    ranged = ResizeShortestEdge((60, 64), sample_style="range")
    shorts = {min(ranged(make_sample(50, 80, []))["image"].shape[-2:]) for _ in range(40)}
    assert shorts == {60, 61, 62, 63, 64}
    with pytest.raises(ValueError, match="range"):
        ResizeShortestEdge([1, 2, 3], sample_style="range")
    with pytest.raises(ValueError, match="sample_style"):
        ResizeShortestEdge(10, sample_style="bogus")


def test_flip_horizontal_and_vertical():
    sample = make_sample(40, 100, [[10, 5, 30, 25], [90, 0, 100, 40]])
    out = RandomFlip(prob=1.0)(sample)
    torch.testing.assert_close(out["boxes"], torch.tensor([[70.0, 5, 90, 25], [0, 0, 10, 40]]))
    assert torch.equal(out["image"], sample["image"].flip(-1))
    assert out["labels"].tolist() == [10, 11]
    out = RandomFlip(prob=1.0, horizontal=False, vertical=True)(sample)
    torch.testing.assert_close(out["boxes"], torch.tensor([[10.0, 15, 30, 35], [90, 0, 100, 40]]))
    out = RandomFlip(prob=0.0)(sample)
    torch.testing.assert_close(out["boxes"], sample["boxes"])


def test_crop_clips_and_drops_with_labels_aligned():
    boxes = [
        [10, 10, 30, 30],  # inside -> shifted by (-5, -8)
        [0, 0, 100, 20],  # partly outside -> clipped to the window
        [70, 70, 90, 90],  # entirely outside -> dropped
        [54.5, 10, 80, 20],  # leaves 0.5 px inside (< 1 px) -> dropped
        [40, 40, 60, 60],  # corner inside
    ]
    sample = make_sample(100, 100, boxes, labels=[1, 2, 3, 4, 5])
    out = Crop(top=8, left=5, height=50, width=50)(sample)
    assert out["image"].shape == (3, 50, 50)
    assert torch.equal(out["image"], sample["image"][:, 8:58, 5:55])
    expected = torch.tensor([[5.0, 2, 25, 22], [0, 0, 50, 12], [35, 32, 50, 50]])
    torch.testing.assert_close(out["boxes"], expected)
    assert out["labels"].tolist() == [1, 2, 5]
    assert out["boxes"].canvas_size == (50, 50)


def test_random_crop_sizes_and_alignment():
    torch.manual_seed(0)
    crop = RandomCrop("absolute_range", (30, 45))
    sizes = set()
    for _ in range(50):
        out = crop(make_sample(40, 80, [[0, 0, 80, 40], [79.5, 0, 80, 1]], labels=[1, 2]))
        h, w = out["image"].shape[-2:]
        assert 30 <= h <= 40 and 30 <= w <= 45
        assert out["labels"].tolist() == [1] and out["boxes"].tolist() == [[0, 0, w, h]]
        sizes.add((h, w))
    assert len(sizes) > 10
    out = RandomCrop("absolute", (500, 20))(make_sample(40, 80, []))
    assert out["image"].shape[-2:] == (40, 20)
    out = RandomCrop("relative", (0.5, 0.25))(make_sample(40, 80, []))
    assert out["image"].shape[-2:] == (20, 20)
    for _ in range(10):
        h, w = RandomCrop("relative_range", (0.5, 0.5))(make_sample(40, 80, []))["image"].shape[-2:]
        assert 20 <= h <= 40 and 40 <= w <= 80
    with pytest.raises(ValueError, match="crop_type"):
        RandomCrop("bogus", (1, 2))


def test_compose_and_test_time_sample_without_boxes():
    torch.manual_seed(0)
    aug = build_augmentation([RandomFlip(), ResizeShortestEdge(20, max_size=30)])
    out = aug({"image": tv_tensors.Image(torch.zeros(3, 10, 40, dtype=torch.uint8))})
    assert out["image"].shape == (3, 8, 30) and set(out) == {"image"}
    assert build_augmentation([])({"image": 1}) == {"image": 1}
    with pytest.raises(TypeError, match="instantiate"):
        build_augmentation([{"_target_": "x"}])


def test_drop_small_boxes_keeps_order():
    sample = make_sample(10, 10, [[0, 0, 5, 5], [0, 0, 0.5, 5], [1, 1, 3, 3]], labels=[4, 5, 6])
    out = drop_small_boxes(sample, 1.0)
    assert out["labels"].tolist() == [4, 6]
    assert out["boxes"].tolist() == [[0, 0, 5, 5], [1, 1, 3, 3]]
