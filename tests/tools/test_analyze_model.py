"""scripts/analyze_model.py on the synthetic Salience DETR config at 96 x 128 and on a tiny deformable attention."""

import importlib.util
import json
import os

import pytest
import torch
from torch import nn

from modeling.layers import MultiScaleDeformableAttention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "analyze_model.py")
CONFIG = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py")
SHAPE = (96, 128)


@pytest.fixture(scope="module")
def analyze_model():
    spec = importlib.util.spec_from_file_location("analyze_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(analyze_model):
    torch.set_num_threads(1)
    return analyze_model.analyze(CONFIG, [], shape=SHAPE, device="cpu", num_runs=2, warmup=1)


def test_every_task_returns_well_formed_numbers(result):
    assert result["shape"] == list(SHAPE) and result["device"] == "cpu"
    flop = result["flop"]
    plain, aware = flop["fvcore"], flop["deformable_aware"]
    assert plain["total"] > 0 and aware["total"] > plain["total"]
    assert plain["by_module"][""] == plain["total"] and aware["by_module"][""] == aware["total"]
    top = [name for name in plain["by_module"] if name and "." not in name]
    assert {"backbone", "neck", "transformer"} <= set(top)
    assert 0.99 * plain["total"] <= sum(plain["by_module"][name] for name in top) <= plain["total"]
    assert "transformer.encoder" in plain["by_module"] and "transformer.encoder.layers.0" not in plain["by_module"]
    assert "aten::grid_sampler" not in plain["skipped_ops"] and plain["skipped_ops"]["aten::mul"] > 0
    assert flop["deformable_sampling_calls"] > 0 and flop["deformable_sampling_flops"] > 0
    assert plain["grid_sampler"] * 5 == flop["deformable_sampling_flops"] * 4  # fvcore: 4 per sampled value
    speed = result["speed"]
    assert speed["num_runs"] == 2 and speed["median_ms"] > 0 and speed["mean_ms"] > 0
    memory = result["memory"]
    assert memory["method"] == "rss_hwm" and memory["peak_mb"] >= 0 and memory["peak_absolute_mb"] > 0


def test_deformable_aware_count_exceeds_plain_by_the_skipped_weighted_sums(result):
    flop = result["flop"]
    extra = flop["deformable_aware"]["total"] - flop["fvcore"]["total"]
    # the handle counts 4 + 1 FLOPs per sampled value and channel; fvcore already counted the 4 of grid_sample
    assert extra * 5 == flop["deformable_sampling_flops"]
    assert flop["deformable_aware"]["by_module"]["backbone"] == flop["fvcore"]["by_module"]["backbone"]


def test_parameter_total_is_the_sum_of_numel(analyze_model, result):
    model = analyze_model.build_model(CONFIG, [], "cpu")
    params = result["parameter"]
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert params["by_module"][""] == params["total"]
    assert sum(n for name, n in params["by_module"].items() if name and "." not in name) == params["total"]


class _Attention(nn.Module):
    def __init__(self, shapes):
        super().__init__()
        self.attn = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=len(shapes), num_points=3)
        self.shapes = shapes

    def forward(self, query, reference, value):
        return self.attn(query, reference, value, self.shapes)


def test_handle_formula_on_a_tiny_deformable_attention(analyze_model):
    shapes = [(8, 10), (4, 5)]
    batch, queries, embed, heads, levels, points = 2, 7, 32, 4, 2, 3
    tokens = sum(h * w for h, w in shapes)
    query, reference = torch.rand(batch, queries, embed), torch.rand(batch, queries, levels, 2)
    inputs = (query, reference, torch.rand(batch, tokens, embed))
    plain, aware, calls = analyze_model.flop_analyses(_Attention(shapes), inputs)
    samples = batch * queries * embed * levels * points
    assert calls == [5 * samples]
    assert analyze_model.ms_deform_attn_flops((batch, tokens, heads, embed // heads), (2, 7, 4, 2, 3, 2)) == 5 * samples
    linears = batch * tokens * embed * embed  # value_proj
    linears += batch * queries * embed * (heads * levels * points * 3)  # sampling_offsets (x2) + attention_weights
    linears += batch * queries * embed * embed  # output_proj
    assert plain.total() == linears + 4 * samples  # fvcore: 4 per grid_sample output, weighted sum skipped
    assert aware.total() == linears + 5 * samples
    assert aware.total() - plain.total() == samples


def test_table_prints_one_row_per_override_set(analyze_model, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--device", "cpu", "--shape", "64", "64", "--tasks", "parameter", "flop", "--json", str(out)]
    argv += ["--table", CONFIG, "--table-opts", "model.transformer.num_queries=20", "model.transformer.num_queries=40"]
    results = analyze_model.main(argv)
    text = capsys.readouterr().out
    table = [line for line in text.splitlines() if line.startswith("| salience_detr_r18_synthetic")]
    assert len(table) == 2
    assert "num_queries=20" in table[0] and "num_queries=40" in table[1]
    assert text.count("| config | params (M) | GFLOPs (fvcore) | GFLOPs (with deformable attention) |") == 1
    cells = [row.split("|")[2:-1] for row in table]
    assert all(cell.strip() for row in cells for cell in row[:3])
    assert [row[4].strip() for row in cells] == ["-", "-"]  # speed not asked for
    assert float(cells[0][2]) <= float(cells[1][2])  # more queries, more decoder FLOPs
    with open(out) as f:
        saved = json.load(f)
    assert [r["overrides"] for r in saved] == [[f"model.transformer.num_queries={n}"] for n in (20, 40)]
    assert saved == json.loads(json.dumps(results))
