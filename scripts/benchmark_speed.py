#!/usr/bin/env python
"""Times the R50 COCO models with their fast kernels against the reference kernels, in one process.

For each model (Salience DETR, Relation DETR, LP-DETR; random weights, 91 classes, no download), each variant runs
alternately with the others on the same input, and the script prints the median time and its ratio to the
``reference`` variant (below 1: faster):

* ``reference``: every selectable kernel on its reference backend (``grid_sample`` deformable sampling, the
  relation embedding held in full): what the model computed before the fast paths;
* ``fast``: the config as it is (``"auto"`` sampling: the C++ ``"native"`` kernel where it builds, else ``"gather"``;
  ``"fused"`` relation);
* ``fast+fuse`` (inference only): ``fast`` with batch norms folded and RepVGG blocks merged (``--fuse``);
* ``fast+bf16``: ``fast`` under CPU bf16 autocast (``train.amp.enabled=True`` / ``--amp``).

Inference: batch 1 at ``--size``; train: one forward + backward with 5 boxes per image, batch 2 at
``--train-size``. It also prints how far each variant's top-100 scores and boxes are from the reference's (same
weights, same input). Times on a shared machine are noisy: compare ratios from one run.

    python scripts/benchmark_speed.py                                  # both models, inference and train
    python scripts/benchmark_speed.py --models relation --modes train --reps 5 --json speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import torch  # noqa: E402

from core.lazy import LazyConfig, instantiate  # noqa: E402
from modeling.layers import reference_kernels  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "salience": "projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py",
    "relation": "projects/lp_detr/configs/relation_detr_r50_4scale_12ep.py",
    "lp": "projects/lp_detr/configs/lp_detr_r50_4scale_12ep.py",
}
VARIANTS = ("reference", "fast", "fast+fuse", "fast+bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["salience", "relation"])
    parser.add_argument("--modes", nargs="+", choices=("inference", "train"), default=["inference", "train"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--train-size", nargs=2, type=int, default=(512, 672), metavar=("H", "W"))
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each variant (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def build(model_name: str, seed: int) -> torch.nn.Module:
    cfg = LazyConfig.load(os.path.join(ROOT, CONFIGS[model_name]))
    LazyConfig.apply_overrides(cfg, ["model.num_classes=91", "model.backbone.weights=null"])
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    with torch.no_grad():  # the zero-initialised heads would make every box the same: perturb every parameter
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


def train_inputs(size: tuple[int, int], generator: torch.Generator) -> list[dict]:
    height, width = size
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4], [0.5, 0.5, 0.1, 0.1], [0.2, 0.7, 0.15, 0.2]])
    boxes = torch.cat([boxes, torch.tensor([[0.8, 0.2, 0.1, 0.3]])])
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return [
        {
            "image": (torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8),
            "height": height,
            "width": width,
            "image_id": index,
            "boxes": xyxy,
            "labels": torch.tensor([1, 2, 3, 4, 5]),
        }
        for index in range(2)
    ]


def variant_context(model: torch.nn.Module, variant: str) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    if variant == "reference":
        stack.enter_context(reference_kernels(model))
    if variant.endswith("bf16"):
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return stack


def time_call(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def benchmark_inference(model, args, generator) -> dict:
    height, width = args.size
    image = (torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8)
    inputs = [{"image": image, "height": height, "width": width, "image_id": 0}]
    model.eval()
    models = {}
    for variant in args.variants:
        models[variant] = copy.deepcopy(model).fuse_for_inference() if variant == "fast+fuse" else model

    def run(variant):
        with torch.inference_mode(), variant_context(models[variant], variant):
            return models[variant](inputs)[0]

    outputs = {variant: run(variant) for variant in args.variants}  # warm-up, and the outputs compared
    times = {variant: [] for variant in args.variants}
    for _ in range(args.reps):
        for variant in args.variants:
            times[variant].append(time_call(lambda v=variant: run(v)))
    reference = outputs.get("reference")
    agreement = {}
    for variant, output in outputs.items():
        if reference is not None:
            count = min(100, len(output["scores"]), len(reference["scores"]))
            agreement[variant] = {
                "top100_score_max_diff": float((output["scores"][:count] - reference["scores"][:count]).abs().max()),
                "top100_box_max_diff_px": float((output["boxes"][:count] - reference["boxes"][:count]).abs().max()),
            }
    return {"times": times, "agreement": agreement}


def benchmark_train(model, args, generator) -> dict:
    inputs = train_inputs(tuple(args.train_size), generator)
    model.train()
    variants = [v for v in args.variants if v != "fast+fuse"]

    def step(variant):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(args.seed)  # the same denoising queries for every variant
        with variant_context(model, variant):
            losses = model(inputs)
        total = sum(losses.values())
        total.backward()
        return float(total.detach())

    losses = {variant: step(variant) for variant in variants}
    times = {variant: [] for variant in variants}
    for _ in range(args.reps):
        for variant in variants:
            times[variant].append(time_call(lambda v=variant: step(v)))
    agreement = {
        v: {"loss_diff": abs(loss - losses["reference"])} for v, loss in losses.items() if "reference" in losses
    }
    return {"times": times, "agreement": agreement}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 autocast on CPU, reps {args.reps}")
    results = {}
    for model_name in args.models:
        model = build(model_name, args.seed)
        for mode in args.modes:
            generator = torch.Generator().manual_seed(args.seed)
            run = benchmark_inference if mode == "inference" else benchmark_train
            result = run(model, args, generator)
            medians = {v: statistics.median(t) for v, t in result["times"].items()}
            base = medians.get("reference")
            size = args.size if mode == "inference" else args.train_size
            print(f"\n{model_name} {mode} {'batch 1' if mode == 'inference' else 'batch 2'} {size[0]}x{size[1]}")
            for variant, seconds in medians.items():
                ratio = f"{seconds / base:.2f}x reference" if base else ""
                details = ", ".join(f"{k} {v:.3g}" for k, v in result["agreement"].get(variant, {}).items())
                print(f"  {variant:<10} {seconds:7.2f} s  {ratio:<16} {details}")
            results[f"{model_name}/{mode}"] = {"median_s": medians, **result}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
