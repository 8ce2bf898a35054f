#!/usr/bin/env python
"""Draws Salience DETR's predicted salience maps (paper Figure 6): one PNG per image, with a panel of its
detections and one panel per feature level with the sigmoid of that level's salience logits over the image.

Each level's map covers the padded batch; the part over the (resized) image is cut out and upsampled to the
original image size. A model whose encoder gives no salience (``token_scores``) is an error.

Example (after ``make demo``)::

    python projects/salience_detr/tools/visualize_salience.py --config-file output/demo/config.yaml \\
        --weights output/demo/model_final.pth --input datasets/synthetic/val/000000.png --output /tmp/salience
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)  # the repository root

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.mapper import read_image  # noqa: E402
from engine.inputs import add_inference_arguments, collect_inputs, output_name  # noqa: E402
from engine.predictor import DefaultPredictor  # noqa: E402
from modeling.postprocess import topk_detections  # noqa: E402
from projects.salience_detr.visualization import save_salience_figure  # noqa: E402

logger = logging.getLogger("visualize_salience")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, "Salience DETR LazyConfig (or a run's config.yaml)", "folder for the PNGs")
    return parser.parse_args(argv)


def check_salience_model(model: torch.nn.Module) -> None:
    """Raises a ValueError unless the model is a two-stage DETR whose transformer predicts salience."""
    if not all(hasattr(model, name) for name in ("preprocess", "run", "num_detections")):
        raise ValueError(f"{type(model).__name__} is not a two-stage DETR (no preprocess/run): no salience maps")


def salience_maps(model: torch.nn.Module, inputs: dict) -> tuple[list[torch.Tensor], dict]:
    """Per level ``[H, W]`` salience probabilities in the original image's pixels, and the detections."""
    with torch.no_grad():
        batch = model.preprocess([inputs])
        output = model.run(batch)
    salience = output.token_scores
    if not salience:
        raise ValueError(
            f"the model {type(model).__name__} predicts no salience maps (its encoder gives no token_scores); "
            "use a Salience DETR config"
        )
    size = (inputs["height"], inputs["width"])
    nms_iou_threshold = getattr(model, "nms_iou_threshold", None)
    detections = topk_detections(
        output.dec_logits[-1], output.dec_boxes[-1], [size], model.num_detections, nms_iou_threshold
    )[0]
    padded_h, padded_w = batch.images.shape[-2:]
    image_h, image_w = batch.image_sizes[0]
    maps = []
    for logits in salience:
        level = logits[0:1].float().sigmoid()  # [1, 1, h_l, w_l] over the padded batch
        level = F.interpolate(level, size=(padded_h, padded_w), mode="bilinear", align_corners=False)
        level = level[..., :image_h, :image_w]
        level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        maps.append(level[0, 0].clamp(0, 1).cpu())
    return maps, detections


def _thresholded(output: dict, threshold: float) -> list[dict]:
    keep = output["scores"] >= threshold
    return [
        {"box": box, "label": int(label), "score": score}
        for box, label, score in zip(
            output["boxes"][keep].tolist(), output["labels"][keep].tolist(), output["scores"][keep].tolist()
        )
    ]


def main(argv: list[str] | None = None) -> list[str]:
    """Runs the script; returns the paths of the PNGs."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    paths = collect_inputs(args.input)
    predictor = DefaultPredictor.from_config(args.config_file, args.weights, args.opts, device=args.device)
    model = predictor.model
    check_salience_model(model)
    os.makedirs(args.output, exist_ok=True)
    pngs, used = [], set()
    for path in tqdm(paths, desc="salience", unit="img"):
        image = read_image(path)
        maps, output = salience_maps(model, predictor.mapper.inference_input(image))
        png = save_salience_figure(
            image.permute(1, 2, 0).numpy(),
            [m.numpy() for m in maps],
            _thresholded(output, args.score_threshold),
            predictor.class_names,
            os.path.join(args.output, output_name(path, used)),
            level_names=[f"level {i}" for i in range(len(maps))],
            title=f"{os.path.basename(path)}: salience per feature level (finest first), "
            f"detections with score >= {args.score_threshold}",
        )
        pngs.append(png)
    logger.info(f"wrote {len(pngs)} PNGs to {args.output}")
    return pngs


if __name__ == "__main__":
    main()
