"""Locating the parity fixtures recorded from the official implementations (see ../shared/parity/README.md).

Tests read the directory from ``PARITY_FIXTURES`` (default: ``../shared/parity`` relative to the repository
root) and must pass unchanged on other fixture sets with the same ``spec.json`` hyper-parameters.
"""

import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixtures_root() -> str:
    return os.environ.get("PARITY_FIXTURES", os.path.join(ROOT, "..", "shared", "parity"))


def fixture_dir(model: str) -> str:
    """``<root>/<model>``; a missing directory skips the test unless PARITY_FIXTURES was set explicitly."""
    path = os.path.join(fixtures_root(), model)
    if not os.path.isdir(path):
        if "PARITY_FIXTURES" in os.environ:
            raise FileNotFoundError(f"PARITY_FIXTURES={os.environ['PARITY_FIXTURES']} has no '{model}' directory")
        pytest.skip(f"parity fixtures not found at {path} (set PARITY_FIXTURES)")
    return path


def load_spec(model: str) -> dict:
    with open(os.path.join(fixture_dir(model), "spec.json")) as f:
        return json.load(f)


def load_case(model: str, name: str):
    """A ``.pt`` case file, loaded on CPU."""
    return torch.load(os.path.join(fixture_dir(model), name), map_location="cpu", weights_only=False)


#: where the parity models run (``PARITY_DEVICE=cuda`` on a GPU machine); the recorded outputs are CPU fp32
DEVICE = os.environ.get("PARITY_DEVICE", "cpu")

#: the kernels a parity model runs: its config's (the fast backends), every module's reference backend, or the
#: Triton kernels (on CUDA; on the CPU under Triton's interpreter, which tests/conftest.py turns on without CUDA).
#: Interpreted, the Triton kernels take minutes per model: those runs are marked slow, and the fast suite checks
#: them on one image (``test_triton_kernels_on_one_image``)
KERNELS = ("config", "reference", pytest.param("triton", marks=pytest.mark.slow))


def with_kernels(model, kernels: str):
    """Yields ``model`` on :data:`DEVICE` running the given ``KERNELS``; with ``"config"``, checks that some module
    of the model runs a backend other than its reference (so that the fast kernels are what the parity tests
    check); with ``"triton"``, that the deformable attention (and the relation, where there is one) runs Triton."""
    from modeling.layers import MultiScaleDeformableAttention, kernel_backends, reference_kernels
    from tests.modeling.triton import require_triton_on

    model = model.to(DEVICE)
    selectable = [m for m in model.modules() if hasattr(m, "reference_backend")]
    if kernels == "config":
        assert any(m.backend != m.reference_backend for m in selectable), "the config selects no fast kernel"
        yield model
        return
    if kernels == "triton":
        require_triton_on(DEVICE)
        # every module that has a Triton kernel runs it (the others, e.g. the decoder's self-attention, keep their
        # config's backend)
        with kernel_backends(model, "triton") as switched:
            assert any(isinstance(m, MultiScaleDeformableAttention) for m in switched)
            yield model
        return
    with reference_kernels(model) as switched:
        assert switched and all(m.backend == m.reference_backend for m in selectable)
        yield model


# Tolerances of ../shared/parity/README.md.
BOX_TOL_PX = 1e-3
LOGIT_TOL = 1e-4


def model_inputs(images: list) -> list[dict]:
    """The model's input dicts for uint8 ``[3, H, W]`` images fed at their own size (``image_id`` = index)."""
    return [
        {"image": image, "height": image.shape[1], "width": image.shape[2], "image_id": i}
        for i, image in enumerate(images)
    ]


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """Equal shapes and max absolute difference <= ``atol``, with the difference in the message."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.detach().cpu().float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert diff <= atol, f"{name}: max abs difference {diff:.3g} > {atol}"


def assert_boxes_in_pixels(name: str, actual: torch.Tensor, expected: torch.Tensor, image: torch.Tensor) -> None:
    """Normalised cxcywh boxes compared in pixels of ``image`` (``[3, H, W]``), within ``BOX_TOL_PX``."""
    height, width = image.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    assert_close(f"{name} (pixels)", actual.detach().cpu() * scale, expected * scale, BOX_TOL_PX)


def assert_detections(prefix: str, detections: dict, expected: dict) -> None:
    """Post-processed detections: labels equal, scores within ``LOGIT_TOL``, boxes within ``BOX_TOL_PX``."""
    assert torch.equal(detections["labels"].cpu(), expected["labels"]), f"{prefix}: labels differ"
    assert_close(f"{prefix} scores", detections["scores"], expected["scores"], LOGIT_TOL)
    assert_close(f"{prefix} boxes", detections["boxes"], expected["boxes"], BOX_TOL_PX)


def assert_two_stage_intermediates(output, detections: dict, expected: dict, image) -> None:
    """Selected proposals, every decoder layer and the detections of one image against a recorded case."""
    assert_close("enc_logits", output.enc_logits, expected["enc_logits"], LOGIT_TOL)
    assert_boxes_in_pixels("enc_boxes", output.enc_boxes, expected["enc_boxes"], image)
    assert_close("dec_logits", output.dec_logits, expected["dec_logits"], LOGIT_TOL)
    assert_boxes_in_pixels("dec_boxes", output.dec_boxes, expected["dec_boxes"], image)
    assert_detections("single image", detections, expected)


def assert_padded_batch_detections(model, case) -> None:
    """Both images of ``case`` in one padded batch: detections against the recorded ones."""
    with torch.no_grad():
        detections = model(model_inputs(case["images"]))
    assert len(detections) == len(case["expected"]["batch"])
    for index, (actual, expected) in enumerate(zip(detections, case["expected"]["batch"])):
        assert_detections(f"batch[{index}]", actual, expected)


def run_single_image(model, case, index: int) -> tuple[list[dict], object, dict, dict]:
    """``(inputs, raw predictions, detections, recorded expectations)`` of image ``index`` of ``case`` run alone."""
    inputs = model_inputs([case["images"][index]])
    with torch.no_grad():
        output = model.predict(inputs)
        detections = model(inputs)[0]
    return inputs, output, detections, case["expected"][f"single{index}"]
