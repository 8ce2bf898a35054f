"""The synthetic-data configs of LP-DETR and Relation DETR: derived from Salience DETR's, and a short training run
through tools/train_net.py (finite losses, the COCO evaluator, LP-DETR's Lambda table in the output directory)."""

import json
import math
import os

import pytest

from core.lazy import LazyConfig, instantiate
from engine.defaults import default_argument_parser
from tests.tools.train_net_helpers import register_tiny, tiny_opts
from tools import train_net

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "projects", "lp_detr", "configs")
SALIENCE = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py")


def _config(name):
    return os.path.join(CONFIG_DIR, f"{name}.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny(str(tmp_path_factory.mktemp("data")), "lp_detr_synthetic_smoke")


@pytest.mark.parametrize("name", ["relation_detr_r18_synthetic", "lp_detr_r18_synthetic"])
def test_synthetic_configs_follow_the_salience_detr_one(name):
    cfg, salience = LazyConfig.load(_config(name)), LazyConfig.load(SALIENCE)
    assert cfg.train.output_dir == f"./output/{name}"
    for key in ("max_iter", "eval_period", "lr_reference_batch_size", "checkpointer", "clip_grad", "device"):
        assert cfg.train[key] == salience.train[key], key
    assert cfg.optimizer == salience.optimizer and cfg.lr_multiplier == salience.lr_multiplier
    assert cfg.dataloader == salience.dataloader
    assert cfg.model.backbone == salience.model.backbone and cfg.model.num_classes == salience.model.num_classes
    transformer, small = cfg.model.transformer, salience.model.transformer
    assert transformer.embed_dim == small.embed_dim == 128 and transformer.num_queries == small.num_queries == 100
    assert transformer.encoder.num_layers == transformer.decoder.num_layers == 2
    assert transformer.branches.hybrid.num_proposals == 100
    assert cfg.model.denoising.denoising_nums == salience.model.denoising.denoising_nums
    relation = transformer.decoder.relation
    assert relation.chunk_size is None and not relation.checkpoint
    model = instantiate(cfg.model)
    assert model.transformer.decoder.relation.num_heads == 8
    if name.startswith("lp_detr"):
        assert model.transformer.decoder.relation.lambda_table().shape == (2, 3)
        (hook,) = cfg.train.hooks
        assert hook._target_.__name__ == "RelationWeightsWriter" and hook.period == cfg.train.eval_period
    else:
        assert type(model.transformer.decoder.relation).__name__ == "BoxRelationEmbedding"
        assert list(cfg.train.hooks) == []


def _losses(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    return rows, [r["total_loss"] for r in rows if "total_loss" in r]


def test_relation_detr_synthetic_trains(tiny, tmp_path):
    out = str(tmp_path / "out")
    opts = tiny_opts(out, tiny, max_iter=2, crop=False, **{"lr_multiplier.warmup_iters": 1})
    argv = ["--config-file", _config("relation_detr_r18_synthetic"), *opts, "~dataloader.evaluator"]
    train_net.main(default_argument_parser().parse_args(argv))
    _, losses = _losses(out)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert not os.path.exists(os.path.join(out, "relation_weights.json"))


def test_lp_detr_synthetic_trains_evaluates_and_writes_lambda(tiny, tmp_path):
    out = str(tmp_path / "out")
    opts = tiny_opts(out, tiny, max_iter=10, crop=False, **{"train.eval_period": 5})
    train_net.main(default_argument_parser().parse_args(["--config-file", _config("lp_detr_r18_synthetic"), *opts]))
    rows, losses = _losses(out)
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses), losses
    assert any("loss_class_hybrid" in r for r in rows)  # the hybrid branch trains
    evals = [r for r in rows if "bbox/AP" in r]
    assert [r["iteration"] for r in evals] == [4, 10] and all(math.isfinite(r["bbox/AP"]) for r in evals)
    with open(os.path.join(out, "relation_weights.json")) as f:
        record = json.load(f)
    assert record["iteration"] == 10 and record["unused_rows"] == [0]
    assert len(record["lambda"]) == 2 and all(len(row) == 3 for row in record["lambda"])
    assert all(math.isfinite(v) for row in record["lambda"] for v in row)
    assert record["lambda"][1] != [0.33, 0.33, 0.33]  # row 1 is used by the second decoder layer: it trains
    with open(os.path.join(out, "relation_weights.csv")) as f:
        assert f.readline().strip() == "layer,used,local,medium,global" and len(f.read().splitlines()) == 2
    with open(os.path.join(out, "log.txt")) as f:
        assert "LP-DETR relation weights Lambda after 5 iterations" in f.read()


def test_lambda_hook_on_relation_detr_is_an_error_before_training(tiny, tmp_path):
    out = str(tmp_path / "out")
    opts = tiny_opts(out, tiny, max_iter=2, crop=False, **{"lr_multiplier.warmup_iters": 1})
    hooks = "train.hooks=[{_target_:projects.lp_detr.hooks.RelationWeightsWriter}]"
    argv = ["--config-file", _config("relation_detr_r18_synthetic"), *opts, "~dataloader.evaluator", hooks]
    with pytest.raises(ValueError, match="BoxRelationEmbedding, not a progressive relation"):
        train_net.main(default_argument_parser().parse_args(argv))
    assert not os.path.exists(os.path.join(out, "metrics.json")) or not _losses(out)[1]
