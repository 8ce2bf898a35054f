"""ONNX export of the inference path (``scripts/export_onnx.py``): onnxruntime agrees with PyTorch.

Small synthetic-dataset configs with random weights, exported at a 128x160 canvas. Tolerances: scores within
1e-4, boxes within 1e-2 pixels (float32 noise is ~1e-6 / ~1e-4 px) for the paired detections (same label, box
IoU >= 0.9); every detection paired for Relation DETR / LP-DETR, at least 80% for Salience DETR, whose
redundancy-removal NMS may flip between near-tied candidates on float noise and whose eager token filter may pick
a padded token tied at the minimum salience (see ``modeling/export.py``). The raw logits of the graph and of the
eager run of the traced path agree within 1e-3 for every model.
"""

import os

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from scripts.export_onnx import build_model, check_export, export_onnx, main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SALIENCE = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py")
LP_DETR = os.path.join(ROOT, "projects", "lp_detr", "configs", "lp_detr_r18_synthetic.py")
RELATION = os.path.join(ROOT, "projects", "lp_detr", "configs", "relation_detr_r18_synthetic.py")
SHAPE = (128, 160)  # a multiple of 32: the canvas is exactly this
SCORE_TOL = 1e-4
BOX_TOL = 1e-2


def _export(config, tmp_path, opts=()):
    torch.manual_seed(0)
    model = build_model(config, None, list(opts))
    path = str(tmp_path / "model.onnx")
    wrapper, dynamic = export_onnx(model, path, SHAPE, raw_outputs=True)
    return wrapper, path, dynamic


def _assert_close(diffs, min_matched):
    assert diffs["matched"] >= min_matched, diffs
    assert diffs["scores"] < SCORE_TOL, diffs
    assert diffs["boxes"] < BOX_TOL, diffs


@pytest.mark.parametrize(
    "config, min_matched",
    [(LP_DETR, 1.0), (RELATION, 1.0), (SALIENCE, 0.8)],
    ids=["lp_detr", "relation_detr", "salience_detr"],
)
def test_export_matches_pytorch_at_two_sizes(config, min_matched, tmp_path):
    wrapper, path, dynamic = _export(config, tmp_path)
    assert dynamic
    results = check_export(wrapper, path, dynamic)
    sizes = list(results)
    assert len(sizes) == 2 and sizes[0] == SHAPE and sizes[1] != SHAPE
    for diffs in results.values():
        _assert_close(diffs, min_matched)
        # the graph against the eager run of the same computation: float noise only
        assert diffs["traced_path_logits"] < 1e-3, diffs
    if config == LP_DETR:
        _assert_graph_signature(path)


def _assert_graph_signature(path):
    """uint8 ``[1, 3, height, width]`` in; scores, labels, boxes and the raw outputs out."""
    import onnx

    graph = onnx.load(path).graph
    (image,) = graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3] and [d.dim_param for d in dims[2:]] == ["height", "width"]
    assert [o.name for o in graph.output] == ["scores", "labels", "boxes", "pred_logits", "pred_boxes"]


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["--config-file", LP_DETR, "--output", str(out), "--shape", "96", "128", "--check"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "dynamic, up to 96x128" in text and text.count("max |onnx - torch|") == 2


def test_wrapper_rejects_bad_images():
    from modeling.export import ExportableDetector

    wrapper = ExportableDetector(build_model(LP_DETR), SHAPE)
    with pytest.raises(ValueError, match="larger than the export canvas"):
        wrapper(torch.zeros(1, 3, SHAPE[0] + 1, SHAPE[1], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[1, 3, H, W\]"):
        wrapper(torch.zeros(1, 3, 64, 64))
