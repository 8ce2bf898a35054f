"""Salience DETR computes what the official implementation computes (fixtures recorded at commit 6262e05).

The model is built from the fixture's ``spec.json`` through the project's LazyConfig, the official checkpoint is
converted with ``scripts/convert_checkpoint.py``, and every recorded output is compared: salience maps, selected
two-stage proposals, every decoder layer and the post-processed detections, for each image alone and for both
images in one padded batch.
"""

import os

import pytest
import torch

from core.lazy import instantiate
from scripts.convert_checkpoint import convert_state_dict, load_official_checkpoint
from tests.parity_fixtures import (
    KERNELS,
    LOGIT_TOL,
    assert_close,
    assert_padded_batch_detections,
    assert_two_stage_intermediates,
    fixture_dir,
    load_case,
    load_spec,
    run_single_image,
    with_kernels,
)
from tests.projects.salience_detr_spec import model_config_from_spec

MODEL = "salience_detr_tiny"


def converted_model():
    spec = load_spec(MODEL)
    net = instantiate(model_config_from_spec(spec)).eval()
    official = load_official_checkpoint(os.path.join(fixture_dir(MODEL), "official_checkpoint.pth"))
    net.load_state_dict(convert_state_dict(official, "salience_detr", net.state_dict().keys()))
    return net


@pytest.fixture(scope="module", params=KERNELS)
def model(request):
    yield from with_kernels(converted_model(), request.param)


@pytest.fixture(scope="module")
def case():
    return load_case(MODEL, "eval_case.pt")


@pytest.mark.parametrize("index", [0, 1])
def test_single_image_intermediates_and_detections(model, case, index):
    inputs, output, detections, expected = run_single_image(model, case, index)
    assert len(output.token_scores) == len(expected["salience"])
    for level, (actual, recorded) in enumerate(zip(output.token_scores, expected["salience"])):
        assert_close(f"salience level {level}", actual, recorded, LOGIT_TOL)
    assert_two_stage_intermediates(output, detections, expected, inputs[0]["image"])


def test_triton_kernels_on_one_image(case):
    """The Triton deformable-attention kernel in the whole model (the full parity run with it is marked slow: under
    the interpreter it takes minutes)."""
    for model in with_kernels(converted_model(), "triton"):
        inputs, output, detections, expected = run_single_image(model, case, 1)
        assert_two_stage_intermediates(output, detections, expected, inputs[0]["image"])


def test_padded_batch_detections(model, case):
    assert_padded_batch_detections(model, case)


def test_converter_rejects_unknown_and_missing_keys(model):
    official = load_official_checkpoint(os.path.join(fixture_dir(MODEL), "official_checkpoint.pth"))
    with pytest.raises(KeyError, match="transformer.mystery.weight"):
        convert_state_dict({**official, "transformer.mystery.weight": torch.zeros(1)}, "salience_detr")
    incomplete = {k: v for k, v in official.items() if not k.startswith("transformer.tgt_embed")}
    with pytest.raises(KeyError, match="missing.*transformer.tgt_embed.weight"):
        convert_state_dict(incomplete, "salience_detr", model.state_dict().keys())
    converted = convert_state_dict(official, "salience_detr")
    assert all(v.dtype == torch.float32 for v in converted.values() if v.is_floating_point())
