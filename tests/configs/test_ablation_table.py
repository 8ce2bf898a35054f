"""The README's table of the papers' ablation rows is executable: every row's config loads, every override applies
to an existing key and changes it, the rows of one paper table give different models, and every row with overrides
builds (random weights, no download) and runs one inference. Read from the README itself, so the table cannot drift.
"""

import os
import re

import pytest
import torch
import yaml

from core.lazy import LazyConfig
from modeling.transformer import MultiLevelTokens
from modeling.transformer.query_selection import TopKQuerySelector
from projects.salience_detr.modeling import RedundancyRemovalSelector
from tests.configs.test_every_config import ROOT, _infer

SECTION = "## Ablations of the papers"


def ablation_rows() -> list[dict]:
    """The table rows under :data:`SECTION` of README.md: paper, table, row, config, overrides."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("paper", "---"):
            continue
        (config,) = re.findall(r"`([^`]+)`", cells[3])
        overrides = re.findall(r"`([^`]+)`", cells[4])
        rows.append({"paper": cells[0], "table": cells[1], "row": cells[2], "config": config, "overrides": overrides})
    return rows


ROWS = ablation_rows()


def _row_id(row):
    return f"{row['paper']}-{row['table']}-{row['row'][:30]}"


def _value_at(cfg, key):
    """The value at dotted ``key`` (a lazy call as its Python text, so two can be compared)."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return LazyConfig.to_py(node) if hasattr(node, "keys") else node


def _config(row):
    cfg = LazyConfig.load(os.path.join(ROOT, row["config"]))
    return LazyConfig.apply_overrides(cfg, row["overrides"])


def test_the_table_covers_every_ablation_the_papers_report():
    tables = {(r["paper"], r["table"]) for r in ROWS}
    assert tables == {
        ("Salience DETR", "6"),
        ("Salience DETR", "7"),
        ("Salience DETR", "8"),
        ("Salience DETR", "1"),
        ("LP-DETR", "III"),
        ("LP-DETR", "IV"),
    }
    overrides = [o for r in ROWS for o in r["overrides"]]
    for key in ("num_relation_heads=0", "num_relation_heads=2", "num_relation_heads=4", "num_queries=300"):
        assert any(o.endswith(key) for o in overrides), key


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_every_override_changes_an_existing_key(row):
    base = LazyConfig.load(os.path.join(ROOT, row["config"]))
    for text in row["overrides"]:
        key = text.split("=", 1)[0]
        before = _value_at(base, key)
        changed = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, row["config"])), [text])
        assert _value_at(changed, key) != before, f"{text} leaves {key} as it is"


@pytest.mark.parametrize("table", sorted({(r["paper"], r["table"]) for r in ROWS}), ids=lambda t: f"{t[0]}-{t[1]}")
def test_the_rows_of_a_table_are_different_models(table):
    models = [LazyConfig.to_py(_config(r).model) for r in ROWS if (r["paper"], r["table"]) == table]
    assert len(models) >= 2 and len(set(models)) == len(models)


@pytest.mark.parametrize("row", [r for r in ROWS if r["overrides"]], ids=_row_id)
def test_every_row_with_overrides_builds_and_infers(row):
    """The built module holds each overridden value (the key path is the module path, under ``model``)."""
    model, detections = _infer(_config(row).model)
    assert torch.isfinite(detections["boxes"]).all()
    for text in row["overrides"]:
        key, value = text.split("=", 1)
        built = model
        for part in key.split(".")[1:]:
            built = getattr(built, part)
        if isinstance(built, torch.Tensor):
            built = built.tolist()
        assert built == yaml.safe_load(value), text
        if key == "model.transformer.num_queries":
            assert model.transformer.query_selector.num_queries == built


def test_redundancy_removal_with_iou_threshold_one_is_plain_topk():
    """The RR-off row: with threshold 1.0 NMS suppresses nothing, so the selection is TopKQuerySelector's."""
    shapes = [(8, 10), (4, 5), (2, 3)]
    sizes = [h * w for h, w in shapes]
    starts = torch.tensor([0, *torch.tensor(sizes).cumsum(0)[:-1].tolist()])
    tokens = MultiLevelTokens(
        feats=None,
        pos=None,
        mask=None,
        level_masks=None,
        spatial_shapes=torch.tensor(shapes),
        level_start_index=starts,
        valid_ratios=None,
    )
    logits = torch.randn(3, sum(sizes), 5, generator=torch.Generator().manual_seed(0))
    plain = TopKQuerySelector(num_queries=20)(logits, tokens)
    no_removal = RedundancyRemovalSelector(num_queries=20, iou_threshold=1.0)(logits, tokens)
    assert torch.equal(no_removal, plain)
    assert not torch.equal(RedundancyRemovalSelector(num_queries=20)(logits, tokens), plain)
