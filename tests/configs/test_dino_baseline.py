"""The DINO baseline config (Salience DETR's efficiency comparison): structure, parameter count, one training step."""

import os

import torch

from core.lazy import LazyConfig, instantiate
from modeling.meta_arch import TwoStageDETR
from modeling.transformer import DeformableEncoder, TopKQuerySelector, TwoStageTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DINO = os.path.join(ROOT, "configs", "baselines", "dino_r50_4scale_12ep.py")
SALIENCE = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r50_4scale_12ep.py")
# Measured with this config and num_classes=91; detrex's DINO-4scale R50 is reported at about 47.5M (it adds a
# 92 x 256 label embedding for denoising where this one has 91 x 256, the only size difference by construction).
DINO_R50_91_CLASSES_PARAMETERS = 47_671_897


def _model_config(*overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(DINO), ["model.backbone.weights=null", *overrides])
    return cfg.model


def test_dino_is_the_plain_two_stage_core_with_the_salience_recipe():
    dino, salience = LazyConfig.load(DINO), LazyConfig.load(SALIENCE)
    assert dino.model._target_ is TwoStageDETR and dino.model.transformer._target_ is TwoStageTransformer
    assert dino.model.transformer.encoder._target_ is DeformableEncoder
    assert dino.model.transformer.query_selector._target_ is TopKQuerySelector
    assert dino.model.transformer.memory_fusion is None
    assert dino.model.transformer.num_queries == 900 and dino.model.transformer.num_feature_levels == 4
    assert dino.model.transformer.encoder.num_layers == dino.model.transformer.decoder.num_layers == 6
    assert dino.model.denoising.denoising_nums == 100 and dino.model.criterion.class_loss == "focal"
    assert dino.optimizer == salience.optimizer and dino.lr_multiplier == salience.lr_multiplier
    assert dino.optimizer.lr == salience.optimizer.lr and dino.train.epochs == salience.train.epochs
    assert dino.train.clip_grad.params.max_norm == salience.train.clip_grad.params.max_norm
    assert dino.dataloader.train.total_batch_size == salience.dataloader.train.total_batch_size
    assert dino.train.output_dir.endswith("dino_r50_4scale_12ep")


def test_dino_r50_parameter_count():
    model = instantiate(_model_config("model.num_classes=91"))
    assert sum(p.numel() for p in model.parameters()) == DINO_R50_91_CLASSES_PARAMETERS


def test_dino_trains_one_step_on_a_tiny_input():
    torch.manual_seed(0)
    cfg = _model_config(
        "model.num_classes=3",
        "model.transformer.num_queries=20",
        "model.denoising.denoising_nums=6",
        "model.transformer.encoder.num_layers=1",
        "model.transformer.decoder.num_layers=2",
        "model.num_detections=10",
    )
    model = instantiate(cfg).train()
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    record = {"image": image, "height": 64, "width": 96, "image_id": 0}
    record |= {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = model([record])
    assert {"loss_class", "loss_bbox", "loss_giou", "loss_class_enc", "loss_class_dn", "loss_class_0"} <= set(losses)
    assert "loss_salience" not in losses
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    before = model.transformer.tgt_embed.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.transformer.tgt_embed.weight)
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 64, "width": 96}])
    assert result["boxes"].shape == (10, 4) and result["scores"].shape == (10,)
