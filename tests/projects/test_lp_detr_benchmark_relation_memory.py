"""projects/lp_detr/tools/benchmark_relation_memory.py at small sizes: the table, the JSON, the variants' agreement."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "projects", "lp_detr", "tools", "benchmark_relation_memory.py")
SMALL = ["--device", "cpu", "--num-queries", "50", "--num-denoising", "10", "--chunk-size", "16"]
SMALL += ["--repeats", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def bench():
    from projects.lp_detr.tools import benchmark_relation_memory

    return benchmark_relation_memory


def test_every_variant_in_process_agrees_with_the_direct_computation(bench, tmp_path, capsys):
    path = tmp_path / "bench.json"
    report = bench.main([*SMALL, "--in-process", "--json", str(path)])
    text = capsys.readouterr().out
    with open(path) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(report))
    config = saved["config"]
    assert config["total_queries"] == 60 and config["batch_size"] == 1 and config["isolation"] == "in-process"
    assert config["bias_mib"] == pytest.approx(8 * 60 * 60 * 4 / 2**20)
    rows = {(r["model"], r["mode"], r["variant"]) for r in saved["results"]}
    expected = set()
    for model in ("relation_detr", "lp_detr"):
        expected |= {(model, "forward", v) for v in ("direct", "chunked", "fused")}
        backward_variants = ("direct", "checkpoint", "chunked", "chunked+checkpoint", "fused")
        expected |= {(model, "forward+backward", v) for v in backward_variants}
    assert rows == expected
    for r in saved["results"]:
        if r["variant"] == "fused":  # separable phases as differences of per-box phases: float32 rounding
            assert r["max_abs_diff"] <= 1e-4 * r["max_abs_output"], r
        else:
            assert r["max_abs_diff"] <= 1e-6, r  # chunks only split the rows: identical values
        assert r["time_ratio"] > 0 and (r["peak_ratio"] is None or r["peak_ratio"] >= 0)
        if r["mode"] == "forward+backward":
            # the summation order of the projection's gradient differs
            assert r["max_abs_diff_grad"] <= 1e-5 * r["max_abs_grad"], r
        else:
            assert r["max_abs_diff_grad"] is None
        assert r["peak_mib"] >= 0 and r["time_ms"] > 0
    assert all(r["max_abs_output"] > 0 for r in saved["results"])
    assert "[B, heads, Q, Q]" in text and "50 + 10 = 60 queries" in text
    assert "lp_detr" in text and "chunked+checkpoint" in text and f"Wrote {path}" in text


def test_cli_measures_each_variant_in_a_fresh_process(tmp_path):
    path = tmp_path / "bench.json"
    argv = [*SMALL, "--models", "lp_detr", "--modes", "forward+backward", "--variants", "direct", "chunked"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, SCRIPT, *argv, "--json", str(path)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    with open(path) as f:
        report = json.load(f)
    assert report["config"]["isolation"] == "fresh process per variant"
    assert [(r["model"], r["variant"]) for r in report["results"]] == [("lp_detr", "direct"), ("lp_detr", "chunked")]
    direct, chunked = report["results"]
    assert direct["reference"] == "direct" and direct["max_abs_diff"] == 0.0
    assert chunked["max_abs_diff"] <= 1e-6 and chunked["max_abs_diff_grad"] <= 1e-3
    assert direct["memory_method"].startswith("peak RSS")
    assert "fresh process per variant" in proc.stdout and "peak MiB" in proc.stdout


def test_bad_arguments_are_errors(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--num-queries", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--layer", "6"])
