"""The official DETR recipe (``configs/common/recipes``), which the R50 COCO configs of both papers and the DINO
baseline use as it is."""

import os

import pytest

from core.lazy import LazyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = os.path.join(ROOT, "configs", "common", "recipes")


def _load(*path):
    return LazyConfig.load(os.path.join(ROOT, *path))


def test_the_12_and_24_epoch_recipes_are_the_official_ones():
    cfg12 = _load(RECIPES, "detr_coco_12ep.py")
    assert cfg12.optimizer.lr == 1e-4 and cfg12.optimizer.weight_decay == 1e-4
    assert cfg12.train.lr_reference_batch_size == 10 and cfg12.dataloader.train.total_batch_size == 10
    params = cfg12.optimizer.params
    assert params.weight_decay_norm == 0 and params.weight_decay_bias == 0
    assert params.lr_factors == {"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1}
    assert cfg12.train.clip_grad.enabled and cfg12.train.clip_grad.params.max_norm == 0.1
    assert cfg12.lr_multiplier.warmup_iters == 1000
    assert cfg12.train.epochs == 12 and list(cfg12.lr_multiplier.scheduler.milestones) == [10]
    cfg24 = _load(RECIPES, "detr_coco_24ep.py")
    assert cfg24.train.epochs == 24 and list(cfg24.lr_multiplier.scheduler.milestones) == [20]
    assert cfg24.lr_multiplier.scheduler.num_updates == 24
    assert cfg24.optimizer == cfg12.optimizer


@pytest.mark.parametrize(
    "config, recipe",
    [
        ("projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py", "detr_coco_12ep.py"),
        ("projects/salience_detr/configs/salience_detr_r50_4scale_24ep.py", "detr_coco_24ep.py"),
        ("projects/lp_detr/configs/relation_detr_r50_4scale_12ep.py", "detr_coco_12ep.py"),
        ("projects/lp_detr/configs/relation_detr_r50_4scale_24ep.py", "detr_coco_24ep.py"),
        ("projects/lp_detr/configs/lp_detr_r50_4scale_12ep.py", "detr_coco_12ep.py"),
        ("projects/salience_lp_detr/configs/salience_lp_detr_r50_4scale_12ep.py", "detr_coco_12ep.py"),
        ("configs/baselines/dino_r50_4scale_12ep.py", "detr_coco_12ep.py"),
    ],
)
def test_coco_configs_use_the_recipe_unchanged(config, recipe):
    cfg, reference = _load(config), _load(RECIPES, recipe)
    assert cfg.optimizer == reference.optimizer and cfg.lr_multiplier == reference.lr_multiplier
    assert cfg.dataloader.train == reference.dataloader.train and cfg.dataloader.test == reference.dataloader.test
    assert {k: v for k, v in cfg.train.items() if k != "output_dir"} == {
        k: v for k, v in reference.train.items() if k != "output_dir"
    }
    assert cfg.model.num_classes == 80 and cfg.model.criterion.weight_dict.num_decoder_layers == 6
