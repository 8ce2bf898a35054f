"""Tests of the shared image batching, box rescaling and target collection."""

import pytest
import torch

from modeling.preprocess import batch_images, pixel_stat_buffer, rescale_boxes, targets_from_inputs

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _stats():
    return pixel_stat_buffer(MEAN, "pixel_mean"), pixel_stat_buffer(STD, "pixel_std", positive=True)


def _record(h, w, value=0, image_id=0, **extra):
    image = torch.full((3, h, w), value, dtype=torch.uint8)
    return {"image": image, "height": h, "width": w, "image_id": image_id, **extra}


def test_pixel_stat_buffer_shape_and_checks():
    mean = pixel_stat_buffer(MEAN, "pixel_mean")
    assert mean.shape == (3, 1, 1) and mean.dtype == torch.float32
    assert torch.allclose(mean.flatten(), torch.tensor(MEAN))
    with pytest.raises(ValueError, match="pixel_mean"):
        pixel_stat_buffer((123.675, 116.28, 103.53), "pixel_mean")
    with pytest.raises(ValueError, match="3 values"):
        pixel_stat_buffer((0.5, 0.5), "pixel_mean")
    with pytest.raises(ValueError, match="positive"):
        pixel_stat_buffer((0.2, 0.0, 0.2), "pixel_std", positive=True)


def test_normalisation_values():
    mean, std = _stats()
    image = torch.randint(0, 256, (3, 8, 10), dtype=torch.uint8)
    batch = batch_images([{"image": image, "image_id": 0}], mean, std, size_divisibility=0)
    expected = (image.float() / 255 - mean) / std
    assert batch.images.shape == (1, 3, 8, 10)
    assert batch.images.dtype == torch.float32
    assert torch.allclose(batch.images[0], expected, atol=1e-5)
    assert not batch.mask.any()


def test_padding_zeros_mask_and_divisibility():
    mean, std = _stats()
    inputs = [_record(50, 70, value=255, image_id=1), _record(64, 33, value=0, image_id=2)]
    batch = batch_images(inputs, mean, std, size_divisibility=32)
    assert batch.images.shape == (2, 3, 64, 96)
    assert batch.image_sizes == [(50, 70), (64, 33)]
    assert batch.mask.shape == (2, 64, 96) and batch.mask.dtype == torch.bool
    for i, (h, w) in enumerate(batch.image_sizes):
        assert not batch.mask[i, :h, :w].any()
        assert batch.mask[i, h:].all() and batch.mask[i, :, w:].all()
        padded = batch.images[i].masked_select(batch.mask[i].expand(3, -1, -1))
        assert torch.count_nonzero(padded) == 0  # zeros after normalisation
    # inside the image, the normalised values of a constant image are constant per channel
    assert torch.allclose(batch.images[0, :, :50, :70], ((1.0 - mean) / std).expand(3, 50, 70))
    assert torch.allclose(batch.images[1, :, :64, :33], ((0.0 - mean) / std).expand(3, 64, 33))


def test_no_divisibility_pads_to_max_size():
    mean, std = _stats()
    batch = batch_images([_record(5, 9), _record(7, 3)], mean, std, size_divisibility=1)
    assert batch.images.shape == (2, 3, 7, 9)


def test_batch_images_bad_input_names_image_id():
    mean, std = _stats()
    with pytest.raises(TypeError, match="image_id='a'"):
        batch_images([{"image": torch.zeros(3, 4, 4), "image_id": "a"}], mean, std)
    with pytest.raises(ValueError, match="image_id=7"):
        batch_images([{"image": torch.zeros(4, 4, dtype=torch.uint8), "image_id": 7}], mean, std)
    with pytest.raises(KeyError, match="image_id=3"):
        batch_images([{"image_id": 3}], mean, std)
    with pytest.raises(ValueError, match="empty"):
        batch_images([], mean, std)


def test_rescale_boxes_scales_and_clips():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [-5.0, 90.0, 210.0, 120.0]])
    out = rescale_boxes(boxes, input_size=(100, 200), output_size=(50, 400))
    assert torch.allclose(out[0], torch.tensor([20.0, 10.0, 60.0, 20.0]))
    assert torch.allclose(out[1], torch.tensor([0.0, 45.0, 400.0, 50.0]))
    assert rescale_boxes(torch.zeros(0, 4), (10, 10), (20, 20)).shape == (0, 4)


def test_targets_from_inputs():
    inputs = [
        _record(8, 8, boxes=torch.tensor([[0.0, 1.0, 4.0, 5.0]]), labels=torch.tensor([2])),
        _record(8, 8, image_id=1, boxes=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64)),
    ]
    targets = targets_from_inputs(inputs, "cpu", num_classes=3)
    assert targets[0]["boxes"].shape == (1, 4) and targets[0]["boxes"].dtype == torch.float32
    assert targets[0]["labels"].tolist() == [2] and targets[0]["labels"].dtype == torch.int64
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)


def test_targets_from_inputs_errors_name_image_id():
    with pytest.raises(KeyError, match="image_id=5.*'boxes'"):
        targets_from_inputs([_record(4, 4, image_id=5, labels=torch.zeros(0, dtype=torch.int64))], "cpu")
    with pytest.raises(KeyError, match="image_id=6.*'labels'"):
        targets_from_inputs([_record(4, 4, image_id=6, boxes=torch.zeros(0, 4))], "cpu")
    mismatched = _record(4, 4, image_id=8, boxes=torch.zeros(2, 4), labels=torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="image_id=8 has 2 boxes"):
        targets_from_inputs([mismatched], "cpu")
    bad_shape = _record(4, 4, image_id=9, boxes=torch.zeros(2, 5), labels=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="image_id=9"):
        targets_from_inputs([bad_shape], "cpu")
    out_of_range = _record(4, 4, image_id=10, boxes=torch.zeros(1, 4), labels=torch.tensor([3]))
    with pytest.raises(ValueError, match="image_id=10.*0..2"):
        targets_from_inputs([out_of_range], "cpu", num_classes=3)
