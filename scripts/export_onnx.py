"""Exports the inference path of Salience DETR or Relation DETR / LP-DETR to ONNX, and checks it with onnxruntime.

    python scripts/export_onnx.py --config-file CFG.py --weights model_final.pth --output model.onnx \
        [--shape H W] [--opset 17] [--raw-outputs] [--check] [key=value ...]

The graph (see :mod:`modeling.export`) takes ``image``: uint8 ``[1, 3, h, w]``, RGB, 0..255, already resized the
way the test loader resizes (no resizing in the graph), and returns ``scores`` ``[1, K]``, ``labels`` ``[1, K]``
int64 and ``boxes`` ``[1, K, 4]`` xyxy in pixels of the input image (plus ``pred_logits`` / ``pred_boxes`` of the
last decoder layer with ``--raw-outputs``).

``h`` and ``w`` are dynamic, up to ``--shape`` (the canvas the graph zero-pads every image to, with a padding
mask, so that every tensor inside the graph has a static size). The outputs equal the eager model's on a batch
padded to the canvas. Salience DETR's ``HierarchicalTokenFilter`` keeps ``int(valid_tokens * ratio)`` tokens per
level and layer, a top-k whose ``k`` depends on the image size and which tracing would freeze at the export size;
the graph runs its filtered encoder with the canvas's (largest) budget and masks instead
(``projects/salience_detr/modeling/export.py``), the same computation for one image except where the eager
top-k picks a padded token tied at the level's minimum salience (then the graph keeps the valid token; see
``modeling/export.py``).

``--check`` runs onnxruntime (CPU) and the unmodified eager model on random images of two sizes (the export size
and a smaller one) and prints the differences of scores and boxes.
The detections are compared after pairing each ONNX detection with the PyTorch one of the same label and nearest
box: Salience DETR's redundancy-removal NMS can flip between two near-tied candidates on float noise, which
reorders the top-k list without any real difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from engine import predictor  # noqa: E402
from engine.defaults import load_config  # noqa: E402
from modeling.export import OUTPUT_NAMES, RAW_OUTPUT_NAMES, ExportableDetector  # noqa: E402

__all__ = ["build_model", "check_export", "compare_detections", "export_onnx"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="LazyConfig .py of the model")
    parser.add_argument("--weights", default=None, help="checkpoint (.pth); random weights when omitted")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=(384, 384),
        metavar=("H", "W"),
        help="canvas (largest input) size; the fixed input size for Salience DETR",
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--raw-outputs", action="store_true", help="also output pred_logits / pred_boxes")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch at two sizes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides key=value")
    return parser.parse_args(argv)


def build_model(config_file: str, weights: str | None = None, opts: list[str] | None = None) -> torch.nn.Module:
    """The config's model on the CPU in eval mode, with ``weights`` loaded when given (``engine.predictor``)."""
    return predictor.build_model(load_config(config_file, opts or []), weights, "cpu")[0]


def export_onnx(
    model: torch.nn.Module,
    output: str,
    shape: tuple[int, int] = (384, 384),
    opset: int = 17,
    raw_outputs: bool = False,
) -> tuple[ExportableDetector, bool]:
    """Traces ``model`` into ``output``.

    Returns:
        the wrapper that was traced, and whether the image size is dynamic in the graph (always True now; kept
        so that a future variant with a size-dependent op can export at a fixed size).
    """
    wrapper = ExportableDetector(model, tuple(shape), raw_outputs=raw_outputs).eval()
    dynamic = True
    height, width = wrapper.canvas
    image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    names = list(OUTPUT_NAMES) + (list(RAW_OUTPUT_NAMES) if raw_outputs else [])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's TracerWarnings about constant shapes (static by design)
        torch.onnx.export(
            wrapper,
            (image,),
            output,
            input_names=["image"],
            output_names=names,
            dynamic_axes={"image": {2: "height", 3: "width"}} if dynamic else None,
            opset_version=opset,
            dynamo=False,
        )
    return wrapper, dynamic


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def compare_detections(reference: tuple, onnx_outputs: list, min_iou: float = 0.9) -> dict[str, float]:
    """Differences between PyTorch and ONNX detections of one image.

    Each ONNX detection is paired with a PyTorch detection of the same label and a box IoU >= ``min_iou``, the
    one closest in score and box. ``scores``/``boxes``: max abs difference of the paired detections;
    ``ranked_*``: max abs difference position by position (the strict comparison); ``matched``: fraction paired;
    ``unmatched_max_score``: the highest score among unpaired ONNX detections (0 when all are paired).
    """
    ref_scores, ref_labels, ref_boxes = (t[0].detach().cpu().numpy().astype(np.float64) for t in reference[:3])
    scores, labels, boxes = (np.asarray(o[0], dtype=np.float64) for o in onnx_outputs[:3])
    iou = _box_iou(boxes, ref_boxes) * (labels[:, None] == ref_labels[None, :])
    # among the candidates (same label, IoU >= min_iou) the one with the closest score and box: near-duplicate
    # boxes of one class are common, so the best IoU alone may pick a neighbour
    cost = np.abs(scores[:, None] - ref_scores[None, :]) + (1.0 - iou)
    cost[iou < min_iou] = np.inf
    best = cost.argmin(1)
    paired = np.isfinite(cost[np.arange(len(best)), best])
    # with duplicate suppression, a pair of boxes near the IoU threshold may be kept by one side only: then the
    # counts differ and the position-by-position comparison has no meaning (``inf``)
    same_count = len(scores) == len(ref_scores)
    result = {
        "ranked_scores": float(np.abs(scores - ref_scores).max(initial=0.0)) if same_count else float("inf"),
        "ranked_boxes": float(np.abs(boxes - ref_boxes).max(initial=0.0)) if same_count else float("inf"),
        "scores": float(np.abs(scores - ref_scores[best])[paired].max(initial=0.0)),
        "boxes": float(np.abs(boxes - ref_boxes[best])[paired].max(initial=0.0)),
        "matched": float(paired.mean()),
        "unmatched_max_score": float(scores[~paired].max(initial=0.0)),
    }
    return result


def _check_sizes(canvas: tuple[int, int]) -> list[tuple[int, int]]:
    """The export size and a smaller one (about 3/4 of it, not a multiple of 32)."""
    height, width = canvas
    return [(height, width), (max(height * 3 // 4 - 5, 33), max(width * 3 // 4 + 3, 33))]


def check_export(wrapper: ExportableDetector, path: str, dynamic: bool, seed: int = 1) -> dict:
    """Runs onnxruntime and PyTorch on random images of two sizes; returns ``{(h, w): differences}``.

    For a fixed-size graph, the second size must be refused by onnxruntime (its entry is ``{"refused": 1.0}``).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for index, (height, width) in enumerate(_check_sizes(wrapper.canvas)):
        image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)
        if not dynamic and index > 0:
            try:
                session.run(None, {"image": image.numpy()})
            except Exception:  # onnxruntime's InvalidArgument on the fixed input dims
                results[(height, width)] = {"refused": 1.0}
                continue
            raise RuntimeError(f"the fixed-size graph accepted an image of size {height}x{width}")
        start = time.perf_counter()
        outputs = session.run(None, {"image": image.numpy()})
        ort_time = time.perf_counter() - start
        reference = wrapper.reference(image)
        diffs = compare_detections(reference, outputs)
        if len(outputs) > 3:
            diffs["pred_logits"] = float(np.abs(reference[3].numpy() - outputs[3]).max())
            diffs["pred_boxes"] = float(np.abs(reference[4].numpy() - outputs[4]).max())
            with torch.no_grad():
                traced = wrapper(image)  # the eager run of the traced path (canvas token budget for Salience)
            diffs["traced_path_logits"] = float(np.abs(traced[3].numpy() - outputs[3]).max())
        diffs["ort_seconds"] = ort_time
        results[(height, width)] = diffs
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = build_model(args.config_file, args.weights, args.opts)
    start = time.perf_counter()
    wrapper, dynamic = export_onnx(model, args.output, tuple(args.shape), args.opset, args.raw_outputs)
    kind = "dynamic, up to" if dynamic else "fixed"
    print(
        f"wrote {args.output} in {time.perf_counter() - start:.1f} s; input image uint8 [1, 3, H, W], "
        f"{kind} {wrapper.canvas[0]}x{wrapper.canvas[1]}; outputs {', '.join(OUTPUT_NAMES)}"
    )
    if args.check:
        for (height, width), diffs in check_export(wrapper, args.output, dynamic).items():
            if "refused" in diffs:
                print(f"  {height}x{width}: refused by onnxruntime (fixed-size graph), as expected")
                continue
            line = ", ".join(f"{key} {value:.3g}" for key, value in diffs.items())
            print(f"  {height}x{width}: max |onnx - torch|: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
