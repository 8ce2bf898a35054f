"""Relation DETR computes what the official implementation computes (fixtures recorded at commit b485955).

The model is built from the fixture's ``spec.json`` through the project's LazyConfig, the official checkpoint is
converted with ``scripts/convert_checkpoint.py`` (``--model relation_detr``), and every recorded output is
compared: the selected two-stage proposals, every decoder layer (whose self-attention after the first layer is
biased by the box relations) and the post-processed detections, for each image alone and for both images in one
padded batch.
"""

import os

import pytest
import torch

from core.lazy import instantiate
from scripts.convert_checkpoint import convert_state_dict, load_official_checkpoint
from tests.parity_fixtures import (
    KERNELS,
    LOGIT_TOL,
    assert_padded_batch_detections,
    assert_two_stage_intermediates,
    fixture_dir,
    load_case,
    load_spec,
    model_inputs,
    run_single_image,
    with_kernels,
)
from tests.projects.relation_detr_spec import model_config_from_spec

MODEL = "relation_detr_tiny"


def _official_state():
    return load_official_checkpoint(os.path.join(fixture_dir(MODEL), "official_checkpoint.pth"))


@pytest.fixture(scope="module")
def spec():
    return load_spec(MODEL)


@pytest.fixture(scope="module", params=KERNELS)
def model(spec, request):
    net = instantiate(model_config_from_spec(spec)).eval()
    net.load_state_dict(convert_state_dict(_official_state(), "relation_detr", net.state_dict().keys()))
    yield from with_kernels(net, request.param)


@pytest.fixture(scope="module")
def case():
    return load_case(MODEL, "eval_case.pt")


def test_tiny_spec_parameter_count(model, spec):
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]


@pytest.mark.parametrize("index", [0, 1])
def test_single_image_intermediates_and_detections(model, case, index):
    inputs, output, detections, expected = run_single_image(model, case, index)
    assert "hybrid" not in output.branches  # the hybrid branch is training-only
    assert_two_stage_intermediates(output, detections, expected, inputs[0]["image"])


def test_padded_batch_detections(model, case):
    assert_padded_batch_detections(model, case)


def test_relation_changes_the_decoder(model, case):
    """The relation bias is live: without it, the later decoder layers differ from the recorded outputs."""
    expected = case["expected"]["single0"]
    relation = model.transformer.decoder.relation
    model.transformer.decoder.relation = None
    try:
        with torch.no_grad():
            output = model.predict(model_inputs([case["images"][0]]))
    finally:
        model.transformer.decoder.relation = relation
    torch.testing.assert_close(output.dec_logits[0], expected["dec_logits"][0], atol=LOGIT_TOL, rtol=0)
    assert (output.dec_logits[1:] - expected["dec_logits"][1:]).abs().max() > 10 * LOGIT_TOL


def test_converter_rejects_unknown_and_missing_keys(model):
    official = _official_state()
    with pytest.raises(KeyError, match="transformer.mystery.weight"):
        convert_state_dict({**official, "transformer.mystery.weight": torch.zeros(1)}, "relation_detr")
    incomplete = {k: v for k, v in official.items() if not k.startswith("transformer.decoder.position_relation")}
    with pytest.raises(KeyError, match=r"missing.*transformer\.decoder\.relation\.proj\.weight"):
        convert_state_dict(incomplete, "relation_detr", model.state_dict().keys())
    converted = convert_state_dict(official, "relation_detr")
    assert all(v.dtype == torch.float32 for v in converted.values() if v.is_floating_point())
