"""ONNX export of the inference path (``scripts/export_onnx.py``): onnxruntime agrees with PyTorch.

Small synthetic-dataset configs with random weights, exported at a 128x160 canvas. Tolerances: scores within
1e-4, boxes within 1e-2 pixels (float32 noise is ~1e-6 / ~1e-4 px) for the paired detections (same label, box
IoU >= 0.9); every detection paired. On a padded image Salience DETR's eager token filter may pick a padded token
tied at the level's minimum salience (the official fill; see ``projects/salience_detr/modeling/token_filter.py``),
which the graph never does: there the test checks that every difference of the two token selections is such a
tie. The raw logits of the graph and of the eager run of the traced path agree within 1e-3 for every model.
"""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from scripts.export_onnx import build_model, check_export, compare_detections, export_onnx, main  # noqa: E402

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


@pytest.mark.parametrize("config", [LP_DETR, RELATION], ids=["lp_detr", "relation_detr"])
def test_export_matches_pytorch_at_two_sizes(config, tmp_path):
    wrapper, path, dynamic = _export(config, tmp_path)
    assert dynamic
    results = check_export(wrapper, path, dynamic)
    sizes = list(results)
    assert len(sizes) == 2 and sizes[0] == SHAPE and sizes[1] != SHAPE
    for diffs in results.values():
        _assert_close(diffs, 1.0)
        # the graph against the eager run of the same computation: float noise only
        assert diffs["traced_path_logits"] < 1e-3, diffs
    if config == LP_DETR:
        _assert_graph_signature(path)


def test_salience_export_differs_from_eager_only_where_eager_picks_tied_padding(tmp_path):
    """At the canvas size the graph equals the eager model; on a padded image it equals the eager run of the
    static-budget computation, and that differs from the eager model's own token selection only where the eager
    top-k took a padded token tied (at the level's minimum salience, the official fill) with the least salient
    valid token, which the static selection keeps."""
    wrapper, path, dynamic = _export(SALIENCE, tmp_path)
    results = check_export(wrapper, path, dynamic)
    (canvas, canvas_diffs), (padded, padded_diffs) = results.items()
    _assert_close(canvas_diffs, 1.0)
    assert padded_diffs["traced_path_logits"] < 1e-3, padded_diffs
    generator = torch.Generator().manual_seed(1)  # check_export's images
    for height, width in (canvas, padded):
        image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)
        static, eager, salience, mask = _token_selections(wrapper, image)
        flat = torch.cat([level.flatten(1) for level in salience], 1)[0]
        level_min = torch.cat([level.flatten(1).min(1)[0].expand(level[0, 0].numel()) for level in salience])
        for layer, (chosen, reference) in enumerate(zip(static.layer_indices, eager.layer_indices)):
            real = chosen[0, : int(static.layer_counts[layer][0])].tolist()
            only_static, only_eager = set(real) - set(reference[0].tolist()), set(reference[0].tolist()) - set(real)
            assert len(only_static) == len(only_eager), (height, width, layer)
            assert all(mask[0, t] for t in only_eager), "the eager selection differs on a valid token"
            assert all(flat[t] == level_min[t] for t in only_static), "a differing token is not a tie"


def _token_selections(wrapper, image):
    """``(static selection, eager selection, salience maps, token padding mask)`` of one image."""
    encoder = wrapper.model.transformer.encoder
    seen = []
    hooks = [
        encoder.token_filter.register_forward_hook(lambda m, args, out: seen.append(("selection", out))),
        encoder.salience.register_forward_hook(lambda m, args, out: seen.append(("salience", out))),
        encoder.register_forward_pre_hook(lambda m, args: seen.append(("mask", args[0].mask))),
    ]
    try:
        with torch.no_grad():
            wrapper(image)
            wrapper.reference(image)
    finally:
        for hook in hooks:
            hook.remove()
    selections = [value for kind, value in seen if kind == "selection"]
    salience = next(value for kind, value in seen if kind == "salience")
    mask = next(value for kind, value in seen if kind == "mask")
    return selections[0], selections[1], salience, mask


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


def test_export_of_a_model_with_duplicate_suppression_runs_the_nms_in_the_graph(tmp_path):
    """``model.nms_iou_threshold``: the graph ends in ONNX NonMaxSuppression and keeps what the eager model keeps
    (same count and order at both sizes), fewer than ``num_detections``."""
    import onnx
    import onnxruntime as ort

    wrapper, path, dynamic = _export(LP_DETR, tmp_path, ["model.nms_iou_threshold=0.5"])
    assert "NonMaxSuppression" in {node.op_type for node in onnx.load(path).graph.node}
    for diffs in check_export(wrapper, path, dynamic).values():
        _assert_close(diffs, 1.0)
        assert diffs["ranked_scores"] < SCORE_TOL and diffs["ranked_boxes"] < BOX_TOL, diffs
    image = torch.randint(0, 256, (1, 3, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    scores = ort.InferenceSession(path).run(["scores"], {"image": image.numpy()})[0]
    assert 0 < scores.shape[1] < wrapper.model.num_detections
    assert scores.shape[1] == len(wrapper.reference(image)[0][0])


def test_detections_of_different_counts_are_paired_but_not_ranked():
    reference = (torch.tensor([[0.9, 0.8]]), torch.tensor([[1, 2]]), torch.tensor([[[0, 0, 10, 10], [20, 20, 30, 30]]]))
    onnx_outputs = [np.array([[0.9]]), np.array([[1]]), np.array([[[0, 0, 10, 10]]])]
    diffs = compare_detections(reference, onnx_outputs)
    assert diffs["ranked_scores"] == float("inf") and diffs["ranked_boxes"] == float("inf")
    assert diffs["matched"] == 1.0 and diffs["scores"] < 1e-6 and diffs["boxes"] == 0.0
