"""RelationWeightsWriter: LP-DETR's Lambda table in the output directory, after training and periodically."""

import csv
import json
import logging

import pytest
import torch
from torch import nn

from core import comm
from engine.train_loop import TrainerBase
from projects.lp_detr.hooks import RelationWeightsWriter, find_progressive_relation
from projects.lp_detr.modeling import BoxRelationEmbedding, ProgressiveRelationEmbedding


class _Decoder(nn.Module):
    def __init__(self, relation):
        super().__init__()
        self.relation = relation


class _TinyModel(nn.Module):
    """A model shaped like LP-DETR where the hook looks: ``model.transformer.decoder.relation``."""

    def __init__(self, relation):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.decoder = _Decoder(relation)


class _Trainer(TrainerBase):
    """Each step moves Lambda so that the periodic and final tables differ."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def run_step(self):
        relation = find_progressive_relation(self.model)
        with torch.no_grad():
            relation.layer_weights[1:] += 0.1 * torch.arange(1, 4, dtype=torch.float32)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writes_the_table_after_training_and_periodically(tmp_path, caplog):
    torch.manual_seed(0)
    relation = ProgressiveRelationEmbedding(num_layers=3, num_heads=4, lambda_init=0.33)
    model = nn.DataParallel(_TinyModel(relation))  # unwrapped like DDP
    trainer = _Trainer(model)
    trainer.register_hooks([RelationWeightsWriter(output_dir=str(tmp_path), period=2)])
    periodic = []
    original_write = trainer.hooks[0].write
    trainer.hooks[0].write = lambda iteration: periodic.append(iteration) or original_write(iteration)
    with caplog.at_level(logging.INFO, logger="projects.lp_detr.hooks"):
        trainer.train(0, 5)
    assert periodic == [2, 4, 5]  # every 2 iterations, then after training
    with open(tmp_path / "relation_weights.json") as f:
        record = json.load(f)
    assert record["iteration"] == 5 and record["scopes"] == ["local", "medium", "global"]
    assert record["normalize_lambda"] is False and record["unused_rows"] == [0]
    table = torch.tensor(record["lambda"])
    assert table.shape == (3, 3)
    torch.testing.assert_close(table, relation.lambda_table())
    torch.testing.assert_close(table[0], torch.full((3,), 0.33))  # row 0: no relation, untouched
    torch.testing.assert_close(table[1], torch.tensor([0.83, 1.33, 1.83]))
    rows = _read_csv(tmp_path / "relation_weights.csv")
    assert [r["layer"] for r in rows] == ["0", "1", "2"] and [r["used"] for r in rows] == ["0", "1", "1"]
    assert list(rows[0]) == ["layer", "used", "local", "medium", "global"]
    assert float(rows[2]["global"]) == pytest.approx(float(table[2, 2]))
    text = caplog.text
    assert "Lambda after 5 iterations" in text and "0 (unused)" in text and "first decoder layer" in text
    assert "local" in text and "medium" in text and "global" in text and "relation_weights.csv" in text


def test_normalised_weights_are_written_with_the_raw_parameter(tmp_path, caplog):
    relation = ProgressiveRelationEmbedding(num_layers=2, num_heads=4, normalize_lambda=True)
    with torch.no_grad():
        relation.layer_weights.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    trainer = _Trainer(_TinyModel(relation))
    trainer.run_step = lambda: None
    trainer.register_hooks([RelationWeightsWriter(output_dir=str(tmp_path))])
    with caplog.at_level(logging.INFO, logger="projects.lp_detr.hooks"):
        trainer.train(0, 1)
    with open(tmp_path / "relation_weights.json") as f:
        record = json.load(f)
    assert record["normalize_lambda"] is True
    torch.testing.assert_close(torch.tensor(record["lambda"]), torch.tensor([[0.0, 0, 0], [1, 2, 3]]).softmax(-1))
    assert record["layer_weights"] == [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]
    rows = _read_csv(tmp_path / "relation_weights.csv")
    assert list(rows[1]) == ["layer", "used", "local", "medium", "global", "raw_local", "raw_medium", "raw_global"]
    assert float(rows[1]["raw_global"]) == 3.0
    assert sum(float(rows[1][k]) for k in ("local", "medium", "global")) == pytest.approx(1.0)
    assert "global (softmax)" in caplog.text


@pytest.mark.parametrize(
    "model, message",
    [
        (_TinyModel(BoxRelationEmbedding(num_heads=4)), "not a progressive relation"),
        (_TinyModel(None), "NoneType, not a progressive relation"),
        (nn.Linear(2, 2), "has no 'transformer'"),
    ],
)
def test_a_model_without_progressive_relation_fails_before_training(tmp_path, model, message):
    trainer = _Trainer(model)
    trainer.register_hooks([RelationWeightsWriter(output_dir=str(tmp_path))])
    with pytest.raises(ValueError, match=message):
        trainer.train(0, 3)
    assert trainer.iter == 0 and not list(tmp_path.iterdir())  # before the first step, and nothing written


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    trainer = _Trainer(_TinyModel(ProgressiveRelationEmbedding(num_layers=2, num_heads=4)))
    trainer.register_hooks([RelationWeightsWriter(output_dir=str(tmp_path), period=1)])
    trainer.train(0, 2)
    assert not list(tmp_path.iterdir())


def test_bad_arguments():
    with pytest.raises(ValueError, match="period must be >= 0"):
        RelationWeightsWriter(output_dir="x", period=-1)
    trainer = _Trainer(_TinyModel(ProgressiveRelationEmbedding(num_layers=2, num_heads=4)))
    trainer.register_hooks([RelationWeightsWriter()])
    with pytest.raises(ValueError, match="needs an output_dir"):
        trainer.train(0, 1)
