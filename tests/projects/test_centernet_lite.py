"""Tests of CenterNetLite: training losses, targets, decoding, the inference contract, and a small overfit."""

import math

import pytest
import torch
from torch import nn

from projects.centernet_lite.modeling import CenterNetLite, TinyFPNBackbone

NUM_CLASSES = 3


def _model(**kwargs) -> CenterNetLite:
    torch.manual_seed(0)
    defaults = {"width": 8, "feature_channels": 16, "head_channels": 16}
    return CenterNetLite(NUM_CLASSES, **(defaults | kwargs))


def _input(h, w, boxes=(), labels=(), image_id=0, height=None, width=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator),
        "height": height or h,
        "width": width or w,
        "image_id": image_id,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _batch():
    """Two images of different sizes; the second has no objects."""
    return [
        _input(64, 96, [[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 58.0, 16.0]], [0, 2], image_id=1),
        _input(80, 48, image_id=2, seed=1),
    ]


def test_backbone_output_shape():
    backbone = TinyFPNBackbone(width=8, out_channels=16)
    out = backbone(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 16, 16, 24)
    assert backbone.stride == 4 and backbone.out_channels == 16


def test_training_losses_finite_positive_with_empty_image():
    model = _model().train()
    losses = model(_batch())
    assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset"}
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.item() > 0, name


def test_training_batch_without_objects():
    model = _model().train()
    losses = model([_input(64, 64), _input(32, 64, image_id=1)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_heatmap"].item() > 0
    assert losses["loss_size"].item() == 0 and losses["loss_offset"].item() == 0
    sum(losses.values()).backward()
    assert model.heatmap_head[-1].bias.grad is not None


def test_gradients_reach_every_parameter():
    model = _model().train()
    sum(model(_batch()).values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_training_input_without_boxes_names_image_id():
    model = _model().train()
    record = _input(32, 32, image_id="img-7")
    del record["boxes"]
    with pytest.raises(KeyError, match="img-7"):
        model([record])


def test_targets_peak_at_centre_cell_and_stay_inside_the_image():
    model = _model()
    targets = [{"boxes": torch.tensor([[8.0, 12.0, 24.0, 20.0], [0.0, 0.0, 0.0, 5.0]]), "labels": torch.tensor([1, 0])}]
    t = model._build_targets(targets, [(32, 40)], feature_size=(16, 16))
    # the degenerate second box is dropped; the first has centre (16, 16) px = cell (4, 4) at stride 4
    assert t["index"].tolist() == [[0, 1, 4, 4]]
    assert t["heatmap"][0, 1, 4, 4] == 1 and t["pos"].sum() == 1
    assert torch.allclose(t["offsets"], torch.zeros(1, 2))
    assert torch.allclose(t["log_sizes"], torch.tensor([[math.log(4.0), math.log(2.0)]]))
    assert t["heatmap"][0, [0, 2]].sum() == 0
    valid = model._valid_cells([(32, 40)], (16, 16))
    assert valid[0, 0].sum() == 8 * 10 and valid[0, 0, :8, :10].all()


def test_decode_recovers_a_planted_box():
    model = _model(max_detections=5).eval()
    logits = torch.full((1, NUM_CLASSES, 16, 16), -10.0)
    logits[0, 2, 5, 7] = 3.0
    box_pred = torch.zeros(1, 4, 16, 16)
    box_pred[0, :, 5, 7] = torch.tensor([math.log(6.0), math.log(3.0), 0.5, 0.25])
    valid = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    out = model.decode(logits, box_pred, valid)
    assert out["labels"][0, 0] == 2 and out["scores"][0, 0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    # centre (7.5, 5.25) cells = (30, 21) px; size (6, 3) cells = (24, 12) px
    assert torch.allclose(out["boxes"][0, 0], torch.tensor([18.0, 15.0, 42.0, 27.0]))
    assert out["scores"].shape == (1, 5) and out["boxes"].shape == (1, 5, 4)


def test_inference_output_contract():
    model = _model(max_detections=10, score_threshold=0.0).eval()
    inputs = [
        _input(64, 96, image_id=1, height=128, width=200),
        _input(80, 48, image_id=2, height=40, width=24, seed=1),
    ]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for record, out in zip(inputs, outputs):
        assert set(out) == {"boxes", "scores", "labels"}
        k = out["scores"].shape[0]
        assert 0 < k <= 10
        assert out["boxes"].shape == (k, 4) and out["labels"].shape == (k,)
        assert out["labels"].dtype == torch.int64
        assert ((out["labels"] >= 0) & (out["labels"] < NUM_CLASSES)).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
        boxes = out["boxes"]
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= record["width"]).all() and (boxes[:, [1, 3]] <= record["height"]).all()


def test_custom_backbone():
    class Plain(nn.Module):
        out_channels, stride = 8, 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=8, padding=1)

        def forward(self, images):
            return self.conv(images)

    model = CenterNetLite(NUM_CLASSES, backbone=Plain(), head_channels=8, size_divisibility=8).train()
    assert model.stride == 8
    losses = model(_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(AttributeError, match="out_channels"):
        CenterNetLite(NUM_CLASSES, backbone=nn.Identity())


def _two_box_image():
    """A 96x128 noisy grey image with a bright square (class 0) and a dark wide rectangle (class 2)."""
    generator = torch.Generator().manual_seed(0)
    image = 120 + 8 * torch.randn(1, 96, 128, generator=generator)
    image[:, 16:44, 12:40] = 220
    image[:, 50:86, 60:120] = 30
    image = image.clamp(0, 255).to(torch.uint8).expand(3, -1, -1).contiguous()
    boxes = torch.tensor([[12.0, 16.0, 40.0, 44.0], [60.0, 50.0, 120.0, 86.0]])
    record = {
        "image": image,
        "height": 192,
        "width": 256,
        "image_id": 0,
        "boxes": boxes,
        "labels": torch.tensor([0, 2]),
    }
    return record, boxes * 2


def test_overfits_one_image_with_two_boxes():
    from torchvision.ops import box_iou

    record, original_boxes = _two_box_image()
    model = _model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(120):
        loss = sum(model([record]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model([record])[0]
    top_boxes, top_labels = out["boxes"][:2], out["labels"][:2]
    ious = box_iou(original_boxes, top_boxes)  # [gt, det]
    for gt_index, gt_label in enumerate([0, 2]):
        det = int(ious[gt_index].argmax())
        assert ious[gt_index, det] > 0.5, (ious, out["boxes"][:2])
        assert top_labels[det] == gt_label
