"""inference_on_dataset, inference_context and DatasetEvaluators."""

import logging
import time
from collections import Counter, OrderedDict

import pytest
import torch
from torch import nn

from evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    last_inference_times,
)


class SleepyModel(nn.Module):
    """Returns one output per input; sleeps ``slow_s`` in its first ``num_slow`` calls, ``fast_s`` after."""

    def __init__(self, num_slow: int = 0, slow_s: float = 0.0, fast_s: float = 0.001) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.num_slow, self.slow_s, self.fast_s = num_slow, slow_s, fast_s
        self.calls = []

    def forward(self, inputs):
        self.calls.append((self.training, torch.is_grad_enabled()))
        time.sleep(self.slow_s if len(self.calls) <= self.num_slow else self.fast_s)
        return [{"score": self.weight * x["image_id"]} for x in inputs]


class RecordingEvaluator(DatasetEvaluator):
    def __init__(self, key: str = "rec") -> None:
        self.key = key
        self.resets = 0
        self.seen = Counter()

    def reset(self):
        self.resets += 1
        self.seen.clear()

    def process(self, inputs, outputs):
        assert len(inputs) == len(outputs)
        for x, y in zip(inputs, outputs):
            assert y["score"].item() == x["image_id"]
            assert not y["score"].requires_grad
            self.seen[x["image_id"]] += 1

    def evaluate(self):
        return OrderedDict({self.key: {"num": len(self.seen)}})


def make_loader(num_batches: int = 8, batch_size: int = 2):
    return [[{"image_id": b * batch_size + i} for i in range(batch_size)] for b in range(num_batches)]


@pytest.mark.parametrize("training", [True, False])
def test_runs_every_input_once_and_restores_mode(training, caplog):
    model, evaluator = SleepyModel(), RecordingEvaluator()
    model.train(training)
    with caplog.at_level(logging.INFO):
        results = inference_on_dataset(model, make_loader(), evaluator)
    assert results == {"rec": {"num": 16}}
    assert evaluator.resets == 1
    assert evaluator.seen == Counter(range(16))
    assert model.training is training
    assert model.calls == [(False, False)] * 8
    assert "Total inference time" in caplog.text and "on 1 devices" in caplog.text
    assert "Total inference pure compute time" in caplog.text


def test_times_exclude_warmup_iterations():
    model = SleepyModel(num_slow=5, slow_s=0.05, fast_s=0.002)
    inference_on_dataset(model, make_loader(num_batches=9, batch_size=1), None)
    times = last_inference_times()
    assert times["num_images"] == 9
    assert times["num_warmup_images"] == 5
    assert times["num_devices"] == 1
    assert times["model_s"] >= 5 * 0.05 + 4 * 0.002
    assert times["total_s"] >= times["model_s"]
    assert 0.002 <= times["model_s_per_image"] < 0.03
    assert times["model_s_per_image"] <= times["total_s_per_image"] < 0.04


def test_single_batch_loader_has_no_warmup():
    inference_on_dataset(SleepyModel(fast_s=0.002), make_loader(num_batches=1, batch_size=3), None)
    times = last_inference_times()
    assert times["num_images"] == 3 and times["num_warmup_images"] == 0
    assert times["model_s_per_image"] == pytest.approx(times["model_s"] / 3)


def test_evaluator_list_none_and_none_results():
    loader = make_loader(num_batches=2)
    a, b = RecordingEvaluator("a"), RecordingEvaluator("b")
    assert inference_on_dataset(SleepyModel(), loader, [a, b]) == {"a": {"num": 4}, "b": {"num": 4}}
    assert inference_on_dataset(SleepyModel(), loader, None) == {}
    assert inference_on_dataset(SleepyModel(), loader, DatasetEvaluator()) == {}


def test_duplicate_result_keys_raise():
    evaluators = DatasetEvaluators([RecordingEvaluator("x"), RecordingEvaluator("x")])
    with pytest.raises(ValueError, match="'x'"):
        inference_on_dataset(SleepyModel(), make_loader(num_batches=1), evaluators)


def test_inference_context_restores_mode_on_error():
    model = SleepyModel().train()
    with pytest.raises(RuntimeError), inference_context(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training
