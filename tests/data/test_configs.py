"""configs/common/data: both data configs load, and the synthetic one instantiates into working loaders."""

import itertools
import os
import uuid

import pytest

from core import lazy
from data.synthetic import register_synthetic

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "common", "data")


@pytest.mark.parametrize(
    "file_name, train_name, test_name",
    [("coco_detr.py", "coco_2017_train", "coco_2017_val"), ("synthetic.py", "synthetic_train", "synthetic_val")],
)
def test_config_loads_with_evaluator_interpolation(file_name, train_name, test_name):
    cfg = lazy.LazyConfig.load(os.path.join(CONFIG_DIR, file_name))
    assert cfg.dataloader.train.dataset.names == train_name
    assert cfg.dataloader.test.dataset.names == test_name
    assert cfg.dataloader.evaluator.dataset_name == test_name
    assert cfg.dataloader.test.dataset.filter_empty is False
    mapper = lazy.instantiate(cfg.dataloader.train.mapper)
    assert mapper.is_train and lazy.instantiate(cfg.dataloader.test.mapper).is_train is False


def test_synthetic_config_builds_loaders(tmp_path):
    prefix = f"cfg_synth_{uuid.uuid4().hex[:6]}"
    register_synthetic(str(tmp_path / "synthetic"), name_prefix=prefix, num_train=6, num_val=3, seed=0)
    cfg = lazy.LazyConfig.load(os.path.join(CONFIG_DIR, "synthetic.py"))
    cfg.dataloader.train.dataset.names = f"{prefix}_train"
    cfg.dataloader.test.dataset.names = f"{prefix}_val"
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.test.num_workers = 0
    cfg.dataloader.train.seed = 0
    assert cfg.dataloader.evaluator.dataset_name == f"{prefix}_val"
    train = lazy.instantiate(cfg.dataloader.train)
    assert train.batch_size_per_rank == 4
    for batch in itertools.islice(iter(train), 2):
        assert len(batch) == 4
        for d in batch:
            assert min(d["image"].shape[-2:]) <= 352 and max(d["image"].shape[-2:]) <= 512
            assert d["boxes"].shape[0] == d["labels"].shape[0]
    test = lazy.instantiate(cfg.dataloader.test)
    outputs = [d for batch in test for d in batch]
    assert len(outputs) == 3 and all(min(d["image"].shape[-2:]) == 320 for d in outputs)
