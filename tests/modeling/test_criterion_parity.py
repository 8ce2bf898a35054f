"""The set criterion reproduces the losses recorded from the official implementation (``criterion_case.pt``)."""

import pytest
import torch

from modeling.criterion import DetrCriterion, build_weight_dict
from modeling.matcher import HungarianMatcher
from tests.parity_fixtures import load_case, load_spec

MODEL = "salience_detr_tiny"
BASE_KEYS = ("loss_class", "loss_bbox", "loss_giou")


@pytest.fixture(scope="module")
def spec_and_case() -> tuple[dict, dict]:
    """``(spec.json, criterion_case.pt)`` of the recorded Salience DETR."""
    return load_spec(MODEL), load_case(MODEL, "criterion_case.pt")


def _class_loss_type(spec: dict) -> str:
    description = spec["class_loss"].lower()
    return "varifocal_iou_aware" if "varifocal" in description else "focal"


def _criterion(spec: dict, weight_dict: dict) -> DetrCriterion:
    matcher_spec = spec["matcher"]
    matcher = HungarianMatcher(
        cost_class=matcher_spec["cost_class"],
        cost_bbox=matcher_spec["cost_bbox"],
        cost_giou=matcher_spec["cost_giou"],
        focal_alpha=matcher_spec["alpha"],
        focal_gamma=matcher_spec["gamma"],
    )
    return DetrCriterion(
        num_classes=spec["num_classes"],
        matcher=matcher,
        weight_dict=weight_dict,
        class_loss=_class_loss_type(spec),
        alpha=matcher_spec["alpha"],
        gamma=matcher_spec["gamma"],
    )


def test_losses_match_official(spec_and_case):
    spec, case = spec_and_case
    criterion = _criterion(spec, case["weight_dict"])
    with torch.no_grad():
        losses = criterion(case["outputs"], case["targets"])
    expected = case["losses"]
    assert set(losses) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(
            losses[key], torch.as_tensor(value, dtype=torch.float32), atol=1e-4, rtol=1e-5, msg=key
        )


def test_weight_dict_builder_matches_official(spec_and_case):
    spec, case = spec_and_case
    official = case["weight_dict"]
    extra = {"loss_salience": spec["salience_loss_weight"]} if "salience_loss_weight" in spec else None
    built = build_weight_dict(
        {k: official[k] for k in BASE_KEYS},
        num_decoder_layers=spec["dec_layers"],
        hybrid_suffix="_hybrid" if "hybrid_assign" in spec else None,
        extra_weights=extra,
    )
    assert built == dict(official)
    assert list(built) == list(official)
