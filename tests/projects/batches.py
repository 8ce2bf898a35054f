"""Training batches of the model tests: images of different sizes with none, one or many small objects."""

import torch


def num_parameters(model: torch.nn.Module) -> int:
    """Every parameter once, frozen ones included (buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def training_record(height: int, width: int, boxes, labels, seed: int) -> dict:
    """A random ``height x width`` image (its original size twice that) with ``boxes`` (xyxy) and ``labels``."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    return {
        "image": image,
        "height": 2 * height,
        "width": 2 * width,
        "image_id": seed,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def awkward_batch(num_classes: int) -> list[dict]:
    """No objects, one object, many small objects; three different image sizes."""
    small = [[x, y, x + 5.0, y + 4.0] for x in range(2, 120, 10) for y in range(3, 90, 11)]
    return [
        training_record(96, 128, [], [], seed=0),
        training_record(80, 64, [[10.0, 12.0, 50.0, 70.0]], [num_classes - 1], seed=1),
        training_record(100, 130, small, [i % num_classes for i in range(len(small))], seed=2),
    ]


def assert_detections_on_awkward_batch(model, num_classes: int, num_detections: int) -> None:
    """Inference on :func:`awkward_batch` (and on its second image alone): ``num_detections`` finite detections
    per image with labels in ``0..num_classes-1``, boxes in original-image pixels."""
    model.eval()
    batch = awkward_batch(num_classes)
    with torch.no_grad():
        detections = model(batch)
        alone = model(batch[1:2])
    assert len(detections) == len(batch)
    for result, record in zip(detections, batch):
        assert result["boxes"].shape == (num_detections, 4)
        assert result["scores"].shape == result["labels"].shape == (num_detections,)
        assert bool(((result["labels"] >= 0) & (result["labels"] < num_classes)).all())
        assert torch.isfinite(result["boxes"]).all()
        centres_x = (result["boxes"][:, 0] + result["boxes"][:, 2]) / 2
        assert bool((centres_x <= record["width"] + 1e-3).all())  # in original-image pixels (2x the input)
    assert alone[0]["boxes"].shape == (num_detections, 4)
