#!/usr/bin/env python
"""Times the R50 COCO models with their fast kernels against the reference kernels, in one process, on the CPU or
on a GPU.

For each model (Salience DETR, Relation DETR, LP-DETR; random weights, 91 classes, no download), each variant runs
alternately with the others on the same input, and the script prints the median time and its ratio to the
``reference`` variant (below 1: faster), and on CUDA the peak memory of each:

* ``reference``: every selectable kernel on its reference backend (``grid_sample`` deformable sampling, the
  relation embedding held in full): what the model computed before the fast paths;
* ``fast``: the config as it is (``"auto"`` sampling: on the CPU the C++ ``"native"`` kernel where it builds, else
  ``"gather"``; ``"fused"`` relation);
* ``triton``: ``fast`` with every kernel that has a Triton version on it (deformable sampling, relation bias);
  for CUDA (on the CPU only under ``TRITON_INTERPRET=1``, slowly);
* ``+fuse`` (inference only): batch norms folded and RepVGG blocks merged (``--fuse``);
* ``+amp``: under autocast, bf16 on the CPU and fp16 on CUDA (``train.amp.enabled=True`` / ``--amp``); the train
  step runs its backward without a gradient scaler (its cost is negligible).

Inference: batch 1 at ``--size``; train: one forward + backward with 5 boxes per image, batch 2 at
``--train-size``. It also prints how far each variant's top-100 scores and boxes are from the reference's (same
weights, same input; the parity tolerances are 1e-4 for scores and 1e-3 px for boxes, in fp32).

``--modes kernels`` times the deformable-attention sampling alone at the shapes of the R50 models at ``--size``
(four levels of strides 8-64, 8 heads of 32 channels, 4 points): the encoder's (every token a query) and the
decoder's (``--kernel-queries``), batch ``--kernel-batch``, forward and forward + backward, per backend, in fp32 and
with a half-precision value (``amp``), with its agreement with ``"pytorch"``. The relation bias alone is
``projects/lp_detr/tools/benchmark_relation_memory.py``. Times on a shared machine are noisy: compare ratios from
one run.

    python scripts/benchmark_speed.py                                  # both models, inference and train (CPU)
    python scripts/benchmark_speed.py --models relation --modes train --reps 5 --json speed.json
    python scripts/benchmark_speed.py --device cuda --modes kernels inference train    # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import torch  # noqa: E402

from core.device import autocast, default_amp_dtype, resolve_device  # noqa: E402
from core.lazy import LazyConfig, instantiate  # noqa: E402
from modeling.layers import SAMPLING_BACKENDS, kernel_backends, reference_kernels  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "salience": "projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py",
    "relation": "projects/lp_detr/configs/relation_detr_r50_4scale_12ep.py",
    "lp": "projects/lp_detr/configs/lp_detr_r50_4scale_12ep.py",
}
VARIANTS = ("reference", "fast", "fast+fuse", "fast+amp", "triton", "triton+amp", "reference+amp")
DEFAULT_VARIANTS = {
    "cpu": ("reference", "fast", "fast+fuse", "fast+amp"),
    "cuda": ("reference", "fast", "triton", "reference+amp", "triton+amp"),
}
#: deformable-attention backends timed by ``--modes kernels`` (``"native"`` only where it runs: the CPU)
KERNEL_BACKENDS = {"cpu": ("pytorch", "gather", "native"), "cuda": ("pytorch", "gather", "triton")}
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["salience", "relation"])
    parser.add_argument("--modes", nargs="+", choices=("inference", "train", "kernels"), default=["inference", "train"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, help="default: by device")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--train-size", nargs=2, type=int, default=(512, 672), metavar=("H", "W"))
    parser.add_argument("--kernel-queries", type=int, default=900, help="decoder queries of --modes kernels")
    parser.add_argument("--kernel-batch", type=int, default=2, help="batch of --modes kernels (default: 2)")
    parser.add_argument(
        "--kernel-backends", nargs="+", choices=sorted(SAMPLING_BACKENDS), default=None, help="default: by device"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each variant (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides KEY=VALUE (e.g. model.num_queries=300)")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    kind = "cuda" if args.device.type == "cuda" else "cpu"
    args.variants = args.variants or list(DEFAULT_VARIANTS[kind])
    args.kernel_backends = args.kernel_backends or list(KERNEL_BACKENDS[kind])
    return args


def build(model_name: str, seed: int, opts: list[str] | None = None) -> torch.nn.Module:
    cfg = LazyConfig.load(os.path.join(ROOT, CONFIGS[model_name]))
    LazyConfig.apply_overrides(cfg, ["model.num_classes=91", "model.backbone.weights=null", *(opts or [])])
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


def variant_context(model: torch.nn.Module, variant: str, device: torch.device) -> contextlib.ExitStack:
    """The kernels (``reference``, ``fast``: the config's, ``triton``) and autocast (``+amp``) of ``variant``."""
    stack = contextlib.ExitStack()
    kernels = variant.split("+")[0]
    if kernels == "reference":
        stack.enter_context(reference_kernels(model))
    elif kernels == "triton":
        stack.enter_context(kernel_backends(model, "triton"))
    if "+amp" in variant:
        stack.enter_context(autocast(device))
    return stack


class Timer:
    """Times calls (CUDA synchronised) and records the peak CUDA memory of each above the level before it."""

    def __init__(self, device: torch.device):
        self.device = device

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, function) -> tuple[float, float | None]:
        """``(seconds, peak MiB or None)`` of one call of ``function``."""
        self._sync()
        before = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        function()
        self._sync()
        seconds = time.perf_counter() - start
        peak = None if before is None else (torch.cuda.max_memory_allocated(self.device) - before) / MIB
        return seconds, peak


def alternate(variants, run, reps: int, timer: Timer) -> tuple[dict, dict]:
    """Times ``run(variant)`` ``reps`` times for each variant, alternating; returns times and peak memory."""
    times = {variant: [] for variant in variants}
    peaks = {variant: [] for variant in variants}
    for _ in range(reps):
        for variant in variants:
            seconds, peak = timer(lambda v=variant: run(v))
            times[variant].append(seconds)
            if peak is not None:
                peaks[variant].append(peak)
    return times, {v: max(p) for v, p in peaks.items() if p}


def benchmark_inference(model, args, generator) -> dict:
    height, width = args.size
    image = (torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8)
    inputs = [{"image": image, "height": height, "width": width, "image_id": 0}]
    model.eval()
    models = {}
    for variant in args.variants:
        models[variant] = copy.deepcopy(model).fuse_for_inference() if "+fuse" in variant else model

    def run(variant):
        with torch.inference_mode(), variant_context(models[variant], variant, args.device):
            return models[variant](inputs)[0]

    outputs = {variant: run(variant) for variant in args.variants}  # warm-up, and the outputs compared
    times, peaks = alternate(args.variants, run, args.reps, Timer(args.device))
    reference = outputs.get("reference")
    agreement = {}
    for variant, output in outputs.items():
        if reference is not None:
            count = min(100, len(output["scores"]), len(reference["scores"]))
            scores, boxes = (output[k][:count].float().cpu() for k in ("scores", "boxes"))
            agreement[variant] = {
                "top100_score_max_diff": float((scores - reference["scores"][:count].float().cpu()).abs().max()),
                "top100_box_max_diff_px": float((boxes - reference["boxes"][:count].float().cpu()).abs().max()),
            }
    return {"times": times, "peak_mib": peaks, "agreement": agreement}


def benchmark_train(model, args, generator) -> dict:
    inputs = train_inputs(tuple(args.train_size), generator)
    model.train()
    variants = [v for v in args.variants if "+fuse" not in v]

    def step(variant):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(args.seed)  # the same denoising queries for every variant
        with variant_context(model, variant, args.device):
            losses = model(inputs)
        total = sum(losses.values())
        total.backward()
        return float(total.detach())

    losses = {variant: step(variant) for variant in variants}
    times, peaks = alternate(variants, step, args.reps, Timer(args.device))
    agreement = {
        v: {"loss_diff": abs(loss - losses["reference"])} for v, loss in losses.items() if "reference" in losses
    }
    return {"times": times, "peak_mib": peaks, "agreement": agreement}


def r50_level_shapes(height: int, width: int, size_divisibility: int = 32) -> list[tuple[int, int]]:
    """The four feature-map sizes of the R50 models for an input of ``height x width``: the image padded to a
    multiple of ``size_divisibility``, then strides 8, 16, 32, 64 (each stride-2 step rounding up, as the
    convolutions do)."""
    height, width = (math.ceil(x / size_divisibility) * size_divisibility for x in (height, width))
    shapes = [(height // 8, width // 8)]
    while len(shapes) < 4:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def sampling_inputs(shapes, queries: int, batch: int, generator: torch.Generator, device: torch.device):
    """Random value ``[B, S, 8, 32]``, locations and softmax weights of 4 points per level."""
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(batch, num_value, 8, 32, generator=generator)
    locations = torch.rand(batch, queries, 8, len(shapes), 4, 2, generator=generator) * 1.1 - 0.05
    weights = torch.rand(batch, queries, 8, len(shapes) * 4, generator=generator).softmax(-1)
    return [t.to(device) for t in (value, locations, weights.view(batch, queries, 8, len(shapes), 4))]


def benchmark_kernels(args) -> dict:
    """The deformable-attention sampling alone, per backend: encoder and decoder shapes, fp32 and amp."""
    device, timer = args.device, Timer(args.device)
    shapes = r50_level_shapes(*args.size)
    num_value = sum(h * w for h, w in shapes)
    generator = torch.Generator().manual_seed(args.seed)
    results = {}
    for place, queries in (("encoder", num_value), ("decoder", args.kernel_queries)):
        base = sampling_inputs(shapes, queries, args.kernel_batch, generator, device)
        grad = torch.randn(args.kernel_batch, queries, 8 * 32, generator=generator).to(device)
        for precision in ("fp32", "amp"):
            value_dtype = torch.float32 if precision == "fp32" else default_amp_dtype(device)
            inputs = [base[0].to(value_dtype), base[1], base[2]]

            def forward(backend, inputs=inputs):
                with torch.no_grad():
                    return SAMPLING_BACKENDS[backend](inputs[0], shapes, None, inputs[1], inputs[2])

            def forward_backward(backend, inputs=inputs, grad=grad):
                leaves = [t.detach().requires_grad_(True) for t in inputs]
                out = SAMPLING_BACKENDS[backend](leaves[0], shapes, None, leaves[1], leaves[2])
                return torch.autograd.grad(out, leaves, grad.to(out.dtype))

            outputs = {b: forward(b) for b in args.kernel_backends}
            grads = {b: forward_backward(b) for b in args.kernel_backends}
            for mode, run in (("forward", forward), ("forward+backward", forward_backward)):
                times, peaks = alternate(args.kernel_backends, run, args.reps, timer)
                key = f"{place} {mode} {precision}"
                reference = outputs.get("pytorch"), grads.get("pytorch")
                agreement = {}
                for backend in args.kernel_backends if reference[0] is not None else ():
                    if mode == "forward":
                        diff = (outputs[backend].float() - reference[0].float()).abs().max()
                    else:
                        diff = max((a.float() - b.float()).abs().max() for a, b in zip(grads[backend], reference[1]))
                    agreement[backend] = {"max_abs_diff": float(diff)}
                results[key] = {"times": times, "peak_mib": peaks, "agreement": agreement}
    return {"shapes": shapes, "batch": args.kernel_batch, "results": results}


def print_rows(title: str, result: dict, base_name: str) -> dict:
    medians = {v: statistics.median(t) for v, t in result["times"].items()}
    base = medians.get(base_name)
    print(f"\n{title}")
    for variant, seconds in medians.items():
        ratio = f"{seconds / base:.2f}x {base_name}" if base else ""
        peak = result["peak_mib"].get(variant)
        memory = f"peak {peak:8.1f} MiB  " if peak is not None else ""
        details = ", ".join(f"{k} {v:.3g}" for k, v in result["agreement"].get(variant, {}).items())
        print(f"  {variant:<14} {seconds * 1000:10.1f} ms  {ratio:<18} {memory}{details}")
    return medians


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; amp = {default_amp_dtype(device)} autocast; reps {args.reps}")
    results = {}
    if "kernels" in args.modes:
        report = benchmark_kernels(args)
        shapes, batch = report["shapes"], report["batch"]
        print(f"\ndeformable sampling alone: levels {shapes}, batch {batch}, 8 heads x 32 channels, 4 points")
        for key, result in report["results"].items():
            medians = print_rows(key, result, "pytorch")
            results[f"kernels/{key}"] = {"median_s": medians, **result}
    for model_name in args.models:
        if not set(args.modes) & {"inference", "train"}:
            break
        model = build(model_name, args.seed, args.opts).to(device)
        for mode in (m for m in args.modes if m != "kernels"):
            generator = torch.Generator().manual_seed(args.seed)
            run = benchmark_inference if mode == "inference" else benchmark_train
            result = run(model, args, generator)
            size = args.size if mode == "inference" else args.train_size
            title = f"{model_name} {mode} {'batch 1' if mode == 'inference' else 'batch 2'} {size[0]}x{size[1]}"
            medians = print_rows(title, result, "reference")
            results[f"{model_name}/{mode}"] = {"median_s": medians, **result}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
