#!/usr/bin/env python
"""Peak memory and time of the decoder's box-relation bias: Relation DETR's and LP-DETR's, direct, chunked,
checkpointed and fused.

What is measured: one call of the relation module a decoder layer uses for its self-attention bias
(``BoxRelationEmbedding`` / ``ProgressiveRelationEmbedding.forward``): the pairwise relation features of
``Q = num_queries + num_denoising`` boxes, their sine embedding (for LP-DETR the local, medium and global
embeddings mixed with ``Lambda``), and the 1x1 projection to one bias per head: the ``[B, heads, Q, Q]`` tensor
path. Not included: the attention itself, the ``-inf`` masking and flattening in
``RelationDecoder.next_self_attn_mask`` (one more ``[B * heads, Q, Q]`` tensor), the other decoder layers.

* ``forward``: under ``torch.no_grad`` (inference). ``forward+backward``: with autograd, then ``backward`` of a random
  upstream gradient ``[B, heads, Q, Q]`` (allocated inside the measurement, as in training), which reaches the
  projection and LP-DETR's ``Lambda``.
* Variants: ``direct`` (the whole ``[B, Q, Q, C]`` embedding at once), ``chunked`` (``--chunk-size`` source rows at
  a time), ``fused`` (the ``"fused"`` backend: separable features as matrix products, the others embedded and
  projected block by block, recomputed in the backward pass), ``triton`` (the ``"triton"`` backend: the same split,
  the pairwise part computed tile by tile in a Triton kernel; by default on CUDA only), and with
  ``forward+backward`` also ``checkpoint`` and ``chunked+checkpoint`` (each block's embedding is recomputed in the
  backward pass instead of being kept). The ``x direct`` columns divide each variant's peak memory and time by
  the ``direct`` one's.
* Peak memory: on CUDA ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call (tensors,
  not the caching allocator's reserve); on CPU the peak resident set size (``VmHWM``, reset through
  ``/proc/self/clear_refs``; ``getrusage`` where that is not possible) minus the resident size before the call, each
  variant in a fresh process (``MALLOC_MMAP_THRESHOLD_`` fixed so that freed tensors leave the RSS). The CPU figure
  includes allocator slack and is coarser than the CUDA one. The output (and, with backward, its gradient and the
  parameter gradients) is part of the peak; the ``bias MiB`` column gives the size of one ``[B, heads, Q, Q]``
  tensor for comparison.
* Time: the median of ``--repeats`` calls after the measured one (CUDA synchronised).
* Agreement: the maximum absolute difference of each variant's output (and parameter gradients) from ``direct``,
  on the same weights and boxes.

Examples::

    python projects/lp_detr/tools/benchmark_relation_memory.py --device cuda              # 900 + 200 queries, batch 1
    python projects/lp_detr/tools/benchmark_relation_memory.py --device cpu --batch-size 2 --json relation_memory.json
    python projects/lp_detr/tools/benchmark_relation_memory.py --num-queries 50 --num-denoising 10 --models lp_detr
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)  # the repository root

import torch  # noqa: E402

from core.device import resolve_device  # noqa: E402
from projects.lp_detr.modeling import BoxRelationEmbedding, ProgressiveRelationEmbedding  # noqa: E402

MODELS = ("relation_detr", "lp_detr")
MODES = ("forward", "forward+backward")
VARIANTS = {  # name: (chunked, checkpoint, backend)
    "direct": (False, False, "pytorch"),
    "checkpoint": (False, True, "pytorch"),
    "chunked": (True, False, "pytorch"),
    "chunked+checkpoint": (True, True, "pytorch"),
    "fused": (False, False, "fused"),
    "triton": (False, False, "triton"),
}
#: the variants run by default: every one but ``triton``, which is added on CUDA (on the CPU it needs Triton's
#: interpreter, TRITON_INTERPRET=1: correct but slow)
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "triton"]
MIB = 2**20
MEASURES = (
    "one decoder layer's relation bias: pairwise box features -> sine embedding (LP-DETR: local/medium/global mixed "
    "by Lambda) -> 1x1 projection, i.e. the [B, heads, Q, Q] tensor path (not the attention, not the masking)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--num-queries", type=int, default=900, help="matching queries (default: %(default)s)")
    parser.add_argument("--num-denoising", type=int, default=200, help="denoising queries (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="images (default: %(default)s)")
    parser.add_argument("--num-heads", type=int, default=8, help="attention heads (default: %(default)s)")
    parser.add_argument("--num-layers", type=int, default=6, help="decoder layers of LP-DETR (default: %(default)s)")
    parser.add_argument(
        "--layer", type=int, default=None, help="decoder layer of the bias (default: the last, num-layers - 1)"
    )
    parser.add_argument("--chunk-size", type=int, default=300, help="source rows per block (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None, help="default: all; triton only on CUDA"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the measured one (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="on CPU, measure every variant in this process (faster, but a variant's peak can hide below an "
        "earlier one's); CUDA always measures in-process",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights, boxes and upstream gradients (default: 0)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one variant, JSON spec
    args = parser.parse_args(argv)
    for name in ("num_queries", "batch_size", "num_heads", "num_layers", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num_denoising < 0 or args.repeats < 0:
        parser.error("--num-denoising and --repeats must be >= 0")
    args.layer = args.num_layers - 1 if args.layer is None else args.layer
    if not 0 <= args.layer < args.num_layers:
        parser.error(f"--layer must be in [0, {args.num_layers}), got {args.layer}")
    return args


def build_relation(model: str, variant: str, args: argparse.Namespace) -> torch.nn.Module:
    """The relation module of ``model`` (the configs' settings) in ``variant``, with seeded weights."""
    chunked, checkpoint, backend = VARIANTS[variant]
    chunk_size = args.chunk_size if chunked else None
    torch.manual_seed(args.seed)
    if model == "relation_detr":
        relation = BoxRelationEmbedding(
            num_heads=args.num_heads, with_giou=False, chunk_size=chunk_size, checkpoint=checkpoint, backend=backend
        )
    else:
        relation = ProgressiveRelationEmbedding(
            num_layers=args.num_layers,
            num_heads=args.num_heads,
            with_giou=True,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
            backend=backend,
        )
        with torch.no_grad():  # a learnt-looking Lambda, so that all three scopes matter
            relation.layer_weights.uniform_(0.1, 0.6)
    return relation


def make_boxes(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of ``Q`` normalised cxcywh boxes (the previous and the current layer's), seeded."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    num = args.num_queries + args.num_denoising
    centres = torch.rand(2, args.batch_size, num, 2, generator=generator)
    sizes = torch.rand(2, args.batch_size, num, 2, generator=generator) * 0.3 + 0.005
    boxes = torch.cat([centres, sizes], -1).to(device)
    src = boxes[0].contiguous()
    tgt = (boxes[1] * 0.02 + src * 0.98).contiguous()  # the next layer's boxes: close to the previous ones
    return src, tgt


def run_once(relation, src, tgt, mode: str, layer: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward (no grad) or forward+backward; returns the output and the parameter gradients."""
    if mode == "forward":
        with torch.no_grad():
            return relation(src, tgt, layer), {}
    relation.zero_grad(set_to_none=True)
    out = relation(src, tgt, layer)
    generator = torch.Generator(device=out.device).manual_seed(seed + 2)
    upstream = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
    out.backward(upstream)
    del upstream
    grads = {name: p.grad for name, p in relation.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _proc_status(key: str) -> int | None:
    """A ``kB`` line of /proc/self/status in bytes (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(model: str, mode: str, variant: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Peak memory (bytes above the level before the call), median time, output and gradients of one variant."""
    relation = build_relation(model, variant, args).to(device)
    src, tgt = make_boxes(args, device)
    run_once(relation, src[:, :8], tgt[:, :8], mode, args.layer, args.seed)  # warm-up: lazy initialisation
    relation.zero_grad(set_to_none=True)
    gc.collect()
    method = "cuda max_memory_allocated"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        exact = _reset_peak_rss() and _proc_status("VmHWM") is not None
        before = _proc_status("VmRSS") if exact else None
        if before is None:  # no /proc: the lifetime peak, a lower bound when earlier work peaked higher
            before, exact = _maxrss_bytes(), False
        method = "peak RSS (VmHWM reset)" if exact else "peak RSS (getrusage, lower bound)"
    start = time.perf_counter()
    out, grads = run_once(relation, src, tgt, mode, args.layer, args.seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        after = _proc_status("VmHWM") if method.startswith("peak RSS (VmHWM") else _maxrss_bytes()
        peak = after - before
    first_time = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run_once(relation, src, tgt, mode, args.layer, args.seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "model": model,
        "mode": mode,
        "variant": variant,
        "chunk_size": args.chunk_size if VARIANTS[variant][0] else None,
        "checkpoint": VARIANTS[variant][1],
        "backend": VARIANTS[variant][2],
        "peak_mib": max(peak, 0) / MIB,
        "memory_method": method,
        "time_ms": 1000 * (statistics.median(times) if times else first_time),
        "tensors": {"output": out.cpu(), **{f"grad/{k}": v.cpu() for k, v in grads.items()}},
    }


def measure_in_subprocess(model: str, mode: str, variant: str, args: argparse.Namespace, device: torch.device):
    """:func:`measure` in a fresh Python process; the tensors come back through a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result.pt")
        spec = json.dumps({"model": model, "mode": mode, "variant": variant, "result_file": result_file})
        argv = [sys.executable, os.path.abspath(__file__), "--worker", spec, *_forwarded_args(args, device)]
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{model} {mode} {variant} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return torch.load(result_file, weights_only=False)


def _forwarded_args(args: argparse.Namespace, device: torch.device) -> list[str]:
    argv = ["--device", str(device)]
    for name in ("num_queries", "num_denoising", "batch_size", "num_heads", "num_layers", "layer", "chunk_size"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    argv += ["--repeats", str(args.repeats), "--seed", str(args.seed)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def _max_abs(tensors: dict, prefix: str) -> float | None:
    values = [float(v.abs().max()) for k, v in tensors.items() if k.startswith(prefix) and v.numel()]
    return max(values) if values else None


def _max_abs_diff(a: dict, b: dict, prefix: str) -> float | None:
    keys = [k for k in a if k.startswith(prefix)]
    if not keys:
        return None
    if set(keys) != {k for k in b if k.startswith(prefix)}:
        return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in keys)


def run_benchmark(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if args.variants is None:
        args.variants = DEFAULT_VARIANTS + (["triton"] if device.type == "cuda" else [])
    subprocesses = device.type == "cpu" and not args.in_process
    num = args.num_queries + args.num_denoising
    config = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "num_queries": args.num_queries,
        "num_denoising": args.num_denoising,
        "total_queries": num,
        "batch_size": args.batch_size,
        "num_heads": args.num_heads,
        "num_layers": args.num_layers,
        "layer": args.layer,
        "chunk_size": args.chunk_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads() if args.threads is None else args.threads,
        "isolation": "fresh process per variant" if subprocesses else "in-process",
        "bias_mib": args.batch_size * args.num_heads * num * num * 4 / MIB,
        "measures": MEASURES,
    }
    results = []
    for model in args.models:
        for mode in args.modes:
            variants = [v for v in args.variants if not (mode == "forward" and VARIANTS[v][1])]
            if "direct" in variants:  # the reference first
                variants.remove("direct")
                variants.insert(0, "direct")
            reference = reference_result = None
            for variant in variants:
                if subprocesses:
                    result = measure_in_subprocess(model, mode, variant, args, device)
                else:
                    result = measure(model, mode, variant, args, device)
                tensors = result.pop("tensors")
                if reference is None:
                    reference, reference_result = tensors, result
                    result["reference"] = variant
                result["peak_ratio"] = (
                    result["peak_mib"] / reference_result["peak_mib"] if reference_result["peak_mib"] else None
                )
                result["time_ratio"] = result["time_ms"] / reference_result["time_ms"]
                result["max_abs_diff"] = _max_abs_diff(tensors, reference, "output")
                result["max_abs_diff_grad"] = _max_abs_diff(tensors, reference, "grad/")
                result["max_abs_output"] = _max_abs(reference, "output")  # scales of the differences
                result["max_abs_grad"] = _max_abs(reference, "grad/")
                results.append(result)
                del tensors
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return {"config": config, "results": results}


def _format_diff(diff: float | None, scale: float | None, is_reference: bool) -> str:
    if diff is None:
        return "-"
    if is_reference:
        return "ref"
    return f"{diff:.2e} ({diff / scale:.0e})" if scale else f"{diff:.2e}"


def format_table(report: dict) -> str:
    config = report["config"]
    lines = [
        f"Relation bias memory on {config['device_name']} ({config['device']}, {config['isolation']}): "
        f"{config['num_queries']} + {config['num_denoising']} = {config['total_queries']} queries, "
        f"batch {config['batch_size']}, {config['num_heads']} heads, LP-DETR layer {config['layer']} of "
        f"{config['num_layers']}, chunks of {config['chunk_size']} rows",
        f"Measures: {config['measures']}.",
        f"One [B, heads, Q, Q] fp32 bias is {config['bias_mib']:.1f} MiB. Peak = memory above the level before the "
        f"call; time = median of {config['repeats']} calls; diff = max |variant - direct| of the output / the "
        "parameter gradients (relative to max |direct| in brackets).",
    ]
    header = ["model", "mode", "variant", "peak MiB", "x direct", "time ms", "x direct", "out diff", "grad diff"]
    rows = []
    for r in report["results"]:
        out_diff = _format_diff(r["max_abs_diff"], r["max_abs_output"], r.get("reference"))
        grad_diff = _format_diff(r["max_abs_diff_grad"], r["max_abs_grad"], r.get("reference"))
        peak_ratio = "-" if r.get("peak_ratio") is None else f"{r['peak_ratio']:.2f}"
        rows.append(
            [
                r["model"],
                r["mode"],
                r["variant"],
                f"{r['peak_mib']:.1f}",
                peak_ratio,
                f"{r['time_ms']:.1f}",
                f"{r['time_ratio']:.2f}",
                out_diff,
                grad_diff,
            ]
        )
    widths = [max(len(header[c]), *(len(row[c]) for row in rows)) for c in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
    methods = sorted({r["memory_method"] for r in report["results"]})
    lines.append(f"Memory measured by: {', '.join(methods)}.")
    return "\n".join(lines)


def worker_main(args: argparse.Namespace) -> None:
    spec = json.loads(args.worker)
    result = measure(spec["model"], spec["mode"], spec["variant"], args, resolve_device(args.device))
    torch.save(result, spec["result_file"])


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker_main(args)
        return None
    report = run_benchmark(args)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"Wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
