"""Salience supervision against the official recording (``salience_target_case.pt``)."""

import torch

from projects.salience_detr.modeling import SalienceLoss, salience_target_maps
from tests.parity_fixtures import load_case, load_spec

MODEL = "salience_detr_tiny"


def _case():
    return load_case(MODEL, "salience_target_case.pt")


def test_target_maps_match_official():
    case = _case()
    shapes = [tuple(x.shape[-2:]) for x in case["logits"]]
    boxes = [t["boxes"] for t in case["targets"]]
    maps = salience_target_maps(boxes, case["image_sizes"], shapes, case["strides"], case["limit_range"])
    assert len(maps) == len(case["target_maps"])
    for level, (got, expected) in enumerate(zip(maps, case["target_maps"])):
        expected = expected.reshape(got.shape)
        diff = (got - expected).abs().max().item() if got.numel() else 0.0
        assert diff <= 1e-5, f"level {level}: max abs difference {diff}"


def test_loss_matches_official():
    case = _case()
    criterion = SalienceLoss(limit_range=case["limit_range"])
    loss = criterion(case["logits"], case["targets"], case["strides"], case["image_sizes"])["loss_salience"]
    expected = torch.as_tensor(case["loss_salience"], dtype=torch.float32)
    assert torch.isfinite(loss)
    assert abs(loss.item() - expected.item()) <= 1e-4


def test_spec_weights_the_salience_loss():
    assert load_spec(MODEL)["salience_loss_weight"] == 2
