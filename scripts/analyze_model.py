"""FLOPs, parameters, latency and peak memory of a detector config: the papers' efficiency tables.

Usage::

    python scripts/analyze_model.py --config-file CFG [--tasks flop parameter speed memory] [--shape H W]
        [--num-inputs N] [--device cpu|cuda|auto] [--fuse] [--amp] [--json OUT] [key=value ...]
    python scripts/analyze_model.py --table CFG1 CFG2 ... [--table-opts "k=v k=v" ...] [key=value ...]

Trailing ``key=value`` arguments are LazyConfig overrides, as for ``tools/train_net.py`` (e.g.
``model.backbone.weights=null`` to skip the pretrained-weight download; random weights give the same counts).
The model is built from ``cfg.model``, put in eval mode and fed one random uint8 image ``3 x H x W`` (default
800 x 1333, the official counting shape) as ``[{"image": ...}]``; everything measured is its inference path
(preprocessing, backbone, neck, transformer, post-processing). With ``--fuse`` the model is measured after
``modeling.fusion.fuse_for_inference`` (batch norms folded into the convolutions, RepVGG branches merged): what a
deployment runs; the FLOPs then lack the merged 1x1 branches, and each folded norm's affine terms become a bias of
its convolution in the parameter count.

Tasks:

* ``flop``: fvcore ``FlopCountAnalysis``, reported two ways, per module (top level and one level down):

  - *fvcore*: fvcore's own rules (one fused multiply-add = 1 FLOP). Our pure-PyTorch deformable attention samples
    with ``grid_sample``, which fvcore counts as 4 FLOPs per output element (its ``aten::grid_sampler`` rule),
    while the weighting by the attention weights and the sum over levels and points (``aten::mul``,
    ``aten::sum``) are skipped, like every element-wise op.
  - *deformable-aware*: the whole of ``ms_deform_attn_sampling`` is counted by one handle instead. For
    ``value [B, S, M, D]`` and ``sampling_locations [B, Q, M, L, P, 2]`` it counts
    ``B * Q * M * D * L * P * (4 + 1)`` FLOPs: 4 multiply-adds for the bilinear interpolation of each sampled
    value and channel (its four neighbours), plus 1 multiply-add to weight it and add it to the sum over
    ``L * P``. The deformable-aware total thus exceeds the fvcore total by exactly ``B * Q * M * D * L * P``
    per deformable-attention call (the skipped weighted sum). The model runs with the ``"pytorch_single_op"``
    sampling backend for this count (the same computation, traced as one op; ``modeling.layers.ms_deform_attn``),
    whose handle applies ``ms_deform_attn_flops``.

  The ops fvcore skipped (plain count) are listed with their occurrence counts.
* ``parameter``: parameters per module (fvcore ``parameter_count``); total = ``sum(p.numel())``.
* ``speed``: batch-1 inference latency under ``torch.inference_mode``: ``--warmup`` runs, then the median (and
  mean) of ``--num-inputs`` runs, timed with ``time.perf_counter`` after a device synchronisation.
* ``memory``: peak extra memory of one inference above what is allocated before it (weights, input). On CUDA:
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before
  (the absolute peak, weights included, is reported as well). On CPU (Linux): the process's resident-set
  high-water mark is reset (``/proc/self/clear_refs``, value 5) after freed heap pages are returned to the OS
  (glibc ``malloc_trim``), one inference runs, and ``VmHWM`` minus the
  ``VmRSS`` before it is reported; this includes allocator caching and is coarser than the CUDA number.

``--table`` measures several configs, or one config under several ``--table-opts`` override sets (ablation
rows), and prints one Markdown table: config, params (M), GFLOPs (fvcore), GFLOPs (deformable-aware), latency
(ms), peak memory (MB). Overrides written right after the config list apply to every row; ``--table-opts``
takes one quoted ``"k=v k=v"`` set per row (with one config) or per config. ``--json OUT`` writes every result.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from fvcore.nn import FlopCountAnalysis, parameter_count  # noqa: E402
from fvcore.nn.jit_handles import get_shape  # noqa: E402
from torch import nn  # noqa: E402

from core.device import autocast, resolve_device  # noqa: E402
from engine import predictor  # noqa: E402
from engine.defaults import load_config  # noqa: E402
from modeling.layers import (  # noqa: E402
    SINGLE_OP_NAME,
    ms_deform_attn_flops,
    reference_kernels,
    set_sampling_backend,
)

__all__ = [
    "analyze",
    "build_model",
    "count_flops",
    "count_parameters",
    "flop_analyses",
    "main",
    "markdown_table",
    "measure_memory",
    "measure_speed",
    "ms_deform_attn_flops",
]

TASKS = ("flop", "parameter", "speed", "memory")


# ---------------------------------------------------------------------------
# model and input
# ---------------------------------------------------------------------------


def build_model(
    config_file: str, overrides: Sequence[str] = (), device: str | torch.device = "cpu", fuse: bool = False
) -> nn.Module:
    """``cfg.model`` of a LazyConfig file (after ``key=value`` overrides), in eval mode on ``device``; fused for
    inference with ``fuse``."""
    return predictor.build_model(load_config(config_file, overrides), None, device, fuse=fuse)[0]


def random_image(shape: Sequence[int], device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
    """A random uint8 RGB image ``[3, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, int(shape[0]), int(shape[1])), dtype=torch.uint8, generator=generator)
    return image.to(device)


class _ImageToDetections(nn.Module):
    """Traceable adapter: image tensor -> the detections of ``model([{"image": image}])`` as a tuple."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detections = self.model([{"image": image}])[0]
        return tuple(detections[key] for key in sorted(detections))


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


def _sampling_handle(calls: list[int]):
    """An fvcore handle of the single-op sampling backend that also records each call's FLOPs in ``calls``."""

    def handle(inputs: list, outputs: list) -> int:
        del outputs
        shapes = [get_shape(value) for value in inputs]
        value = next(shape for shape in shapes if shape is not None and len(shape) == 4)
        locations = next(shape for shape in shapes if shape is not None and len(shape) == 6)
        calls.append(ms_deform_attn_flops(value, locations))
        return calls[-1]

    return handle


def _module_rows(by_module: dict[str, int], model: nn.Module, prefix: str, max_depth: int = 2) -> dict[str, int]:
    """``{module name: FLOPs}`` for the model (``""``) and its modules down to ``max_depth`` levels."""
    rows = {}
    for name, _ in model.named_modules():
        if name.count(".") + 1 > max_depth and name:
            continue
        key = prefix + name if name else prefix.rstrip(".")
        rows[name] = int(by_module.get(key, 0))
    return rows


def _flop_analysis(module: nn.Module, inputs: tuple, calls: list[int] | None = None) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    if calls is not None:
        analysis.set_op_handle(SINGLE_OP_NAME, _sampling_handle(calls))
    return analysis


def flop_analyses(module: nn.Module, inputs: tuple) -> tuple[FlopCountAnalysis, FlopCountAnalysis, list[int]]:
    """The plain and the deformable-aware fvcore analyses of ``module(*inputs)`` (already run).

    Returns:
        ``(plain, aware, sampling_flops)``: the two analyses and the handle's FLOPs of every deformable sampling
        call, in call order.
    """
    calls: list[int] = []
    with torch.no_grad(), reference_kernels(module):  # traced as plain PyTorch ops, as the official counts are
        plain = _flop_analysis(module, inputs)
        plain.total()
        with set_sampling_backend(module, "pytorch_single_op"):
            aware = _flop_analysis(module, inputs, calls)
            aware.total()
    return plain, aware, calls


def count_flops(model: nn.Module, image: torch.Tensor, max_depth: int = 2) -> dict[str, Any]:
    """Plain fvcore and deformable-aware FLOPs of one inference, in total and per module.

    Returns:
        ``{"fvcore": {"total", "by_module", "skipped_ops", "grid_sampler"}, "deformable_aware": {"total", "by_module"},
        "deformable_sampling_calls", "deformable_sampling_flops"}``; FLOPs as integers, ``by_module`` keyed by
        module name (``""``: the whole model).
    """
    plain, aware, calls = flop_analyses(_ImageToDetections(model), (image,))
    return {
        "fvcore": {
            "total": int(plain.total()),
            "by_module": _module_rows(plain.by_module(), model, "model.", max_depth),
            "skipped_ops": {op: int(n) for op, n in sorted(plain.unsupported_ops().items())},
            "grid_sampler": int(plain.by_operator().get("grid_sampler", 0)),
        },
        "deformable_aware": {
            "total": int(aware.total()),
            "by_module": _module_rows(aware.by_module(), model, "model.", max_depth),
        },
        "deformable_sampling_calls": len(calls),
        "deformable_sampling_flops": sum(calls),
    }


# ---------------------------------------------------------------------------
# parameters, speed, memory
# ---------------------------------------------------------------------------


def count_parameters(model: nn.Module, max_depth: int = 2) -> dict[str, Any]:
    """``{"total": sum(p.numel()), "trainable", "by_module": {name: count}}`` (modules to ``max_depth``)."""
    counts = parameter_count(model)
    rows = {name: int(n) for name, n in counts.items() if name == "" or name.count(".") + 1 <= max_depth}
    return {
        "total": int(sum(p.numel() for p in model.parameters())),
        "trainable": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "by_module": rows,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_speed(
    model: nn.Module, image: torch.Tensor, num_runs: int = 20, warmup: int = 3, amp: bool = False
) -> dict[str, Any]:
    """Batch-1 latency in ms: median and mean of ``num_runs`` timed inferences after ``warmup`` untimed ones
    (under autocast with ``amp``: bfloat16 on a CPU, float16 on CUDA)."""
    if num_runs < 1:
        raise ValueError(f"num_runs must be >= 1, got {num_runs}")
    inputs = [{"image": image}]
    times = []
    with torch.inference_mode(), autocast(image.device, enabled=amp):
        for _ in range(warmup):
            model(inputs)
        _synchronize(image.device)
        for _ in range(num_runs):
            start = time.perf_counter()
            model(inputs)
            _synchronize(image.device)
            times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
        "num_runs": num_runs,
        "warmup": warmup,
        "device": str(image.device),
        "amp": bool(amp),
    }


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Returns freed heap pages to the OS (glibc ``malloc_trim``), so that reused pages do not hide the peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_memory(model: nn.Module, image: torch.Tensor) -> dict[str, Any]:
    """Peak extra memory (MB) of one inference; see the module docstring for the CPU and CUDA methods."""
    inputs = [{"image": image}]
    if image.device.type == "cuda":
        torch.cuda.synchronize(image.device)
        torch.cuda.reset_peak_memory_stats(image.device)
        before = torch.cuda.memory_allocated(image.device)
        with torch.inference_mode():
            model(inputs)
        torch.cuda.synchronize(image.device)
        peak = torch.cuda.max_memory_allocated(image.device)
        return {"peak_mb": (peak - before) / 2**20, "peak_absolute_mb": peak / 2**20, "method": "cuda"}
    gc.collect()
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError as error:
        return {"peak_mb": None, "method": f"unavailable ({error})"}
    before = _proc_status_kb("VmRSS")
    with torch.inference_mode():
        model(inputs)
    peak = _proc_status_kb("VmHWM")
    if before is None or peak is None:
        return {"peak_mb": None, "method": "unavailable (/proc/self/status)"}
    return {"peak_mb": (peak - before) / 1024, "peak_absolute_mb": peak / 1024, "method": "rss_hwm"}


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def analyze(
    config_file: str,
    overrides: Sequence[str] = (),
    tasks: Sequence[str] = TASKS,
    shape: Sequence[int] = (800, 1333),
    device: str = "auto",
    num_runs: int = 20,
    warmup: int = 3,
    fuse: bool = False,
    amp: bool = False,
) -> dict[str, Any]:
    """Runs ``tasks`` on the model of ``config_file`` (fused for inference with ``fuse``; the speed task under
    autocast with ``amp``); returns a JSON-serialisable dict of results."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    torch.manual_seed(0)
    model = build_model(config_file, overrides, device, fuse=fuse)
    image = random_image(shape, model.pixel_mean.device if hasattr(model, "pixel_mean") else resolve_device(device))
    result: dict[str, Any] = {
        "config": config_file,
        "overrides": list(overrides),
        "shape": [int(s) for s in shape],
        "device": str(image.device),
        "fused": bool(fuse),
    }
    if "parameter" in tasks:
        result["parameter"] = count_parameters(model)
    if "memory" in tasks:
        result["memory"] = measure_memory(model, image)
    if "flop" in tasks:
        result["flop"] = count_flops(model, image)
    if "speed" in tasks:
        result["speed"] = measure_speed(model, image, num_runs, warmup, amp=amp)
    return result


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per result of :func:`analyze`."""
    lines = [
        "| config | params (M) | GFLOPs (fvcore) | GFLOPs (with deformable attention) | latency (ms) "
        "| peak memory (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        name = os.path.splitext(os.path.basename(r["config"]))[0]
        if r["overrides"]:
            name += " (" + " ".join(r["overrides"]) + ")"
        if r.get("fused"):
            name += " [fused]"
        flop = r.get("flop")
        cells = [
            name,
            _fmt(r.get("parameter", {}).get("total"), 1e6, 2),
            _fmt(flop["fvcore"]["total"] if flop else None, 1e9, 2),
            _fmt(flop["deformable_aware"]["total"] if flop else None, 1e9, 2),
            _fmt(r.get("speed", {}).get("median_ms"), 1, 1),
            _fmt(r.get("memory", {}).get("peak_mb"), 1, 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _print_report(result: dict[str, Any]) -> None:
    fused = " | fused for inference" if result.get("fused") else ""
    print(
        f"== {result['config']} {' '.join(result['overrides'])} | input {result['shape']} on {result['device']}{fused}"
    )
    if "parameter" in result:
        params = result["parameter"]
        print(f"parameters: {params['total']:,} total ({params['trainable']:,} trainable)")
        print("| module | parameters |\n| --- | --- |")
        for name, n in params["by_module"].items():
            print(f"| {name or 'model'} | {n:,} |")
    if "flop" in result:
        flop = result["flop"]
        plain, aware = flop["fvcore"], flop["deformable_aware"]
        print(f"GFLOPs: fvcore {plain['total'] / 1e9:.2f}, with deformable attention {aware['total'] / 1e9:.2f}")
        print("| module | GFLOPs (fvcore) | GFLOPs (with deformable attention) |\n| --- | --- | --- |")
        for name, n in plain["by_module"].items():
            print(f"| {name or 'model'} | {n / 1e9:.3f} | {aware['by_module'].get(name, 0) / 1e9:.3f} |")
        no_sampling = (plain["total"] - plain["grid_sampler"]) / 1e9
        print(f"GFLOPs fvcore without deformable sampling (grid_sample, as a fused kernel shows): {no_sampling:.2f}")
        print("ops skipped by fvcore:", ", ".join(f"{op} x{n}" for op, n in plain["skipped_ops"].items()) or "none")
    if "memory" in result:
        print(f"peak memory of one inference: {result['memory']}")
    if "speed" in result:
        speed = result["speed"]
        amp = " under autocast" if speed.get("amp") else ""
        print(
            f"latency{amp}: median {speed['median_ms']:.1f} ms, mean {speed['mean_ms']:.1f} ms over {speed['num_runs']}"
        )


def _table_jobs(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    configs, opt_sets = args.table, [shlex.split(s) for s in args.table_opts or []]
    if not opt_sets:
        return [(config, list(args.opts)) for config in configs]
    if len(configs) == 1:
        return [(configs[0], list(args.opts) + opts) for opts in opt_sets]
    if len(configs) != len(opt_sets):
        raise SystemExit(f"--table-opts: give one override set per config ({len(configs)}) or a single config")
    return [(config, list(args.opts) + opts) for config, opts in zip(configs, opt_sets)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", help="LazyConfig of the model")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--shape", nargs=2, type=int, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--num-inputs", type=int, default=20, help="timed runs of the speed task")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before the speed task")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--fuse", action="store_true", help="measure the model fused for inference (norms folded, RepVGG merged)"
    )
    parser.add_argument(
        "--amp", action="store_true", help="time the inference under autocast (bfloat16 on a CPU, float16 on CUDA)"
    )
    parser.add_argument("--table", nargs="+", metavar="CFG", help="configs for one Markdown comparison table")
    parser.add_argument("--table-opts", nargs="+", metavar="OPTS", help='override sets ("k=v k=v") per row')
    parser.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides key=value")
    args = parser.parse_args(argv)
    if not args.config_file and not args.table:
        parser.error("give --config-file or --table")
    if args.table:  # overrides written after the config list belong to every row
        args.opts = [t for t in args.table if "=" in t] + list(args.opts)
        args.table = [t for t in args.table if "=" not in t]
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    jobs = _table_jobs(args) if args.table else [(args.config_file, list(args.opts))]
    results = []
    for config, overrides in jobs:
        result = analyze(
            config,
            overrides,
            args.tasks,
            args.shape,
            args.device,
            args.num_inputs,
            args.warmup,
            fuse=args.fuse,
            amp=args.amp,
        )
        _print_report(result)
        results.append(result)
    if args.table:
        print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return results


if __name__ == "__main__":
    main()
