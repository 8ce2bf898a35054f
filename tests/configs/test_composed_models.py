"""Models made by composition, through the user's entry point: the Salience+LP model (configuration only) and the
example decoder attention of docs/architecture.md (one module file + one config) train and evaluate with
tools/train_net.py, and are what their configs say they are."""

import json
import math
import os

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from engine.defaults import default_argument_parser
from modeling.transformer import DeformableDecoder, DeformableDecoderLayer, QuerySelfAttention
from projects.lp_detr.modeling import ProgressiveRelationEmbedding
from projects.lp_detr.modeling.hybrid import HybridBranch
from projects.salience_detr.modeling import RedundancyRemovalSelector, SalienceEncoder
from tests.fixtures.box_distance_attention import BoxDistanceSelfAttention
from tests.projects.batches import awkward_batch
from tests.tools.train_net_helpers import register_tiny, tiny_opts
from tools import train_net

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SALIENCE_LP = os.path.join(ROOT, "projects", "salience_lp_detr", "configs", "salience_lp_detr_r18_synthetic.py")
SALIENCE = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py")
BOX_DISTANCE = os.path.join(ROOT, "tests", "configs", "salience_detr_box_distance_synthetic.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny(str(tmp_path_factory.mktemp("data")), "composed_models")


def _train(config, tiny, output_dir, max_iter=4):
    opts = tiny_opts(str(output_dir), tiny, max_iter=max_iter, crop=False, **{"train.eval_period": max_iter})
    train_net.main(default_argument_parser().parse_args(["--config-file", config, *opts]))
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def test_salience_lp_model_is_salience_encoder_with_lp_decoder():
    model = instantiate(LazyConfig.load(SALIENCE_LP).model)
    transformer = model.transformer
    assert isinstance(transformer.encoder, SalienceEncoder)
    assert isinstance(transformer.query_selector, RedundancyRemovalSelector)
    assert transformer.memory_fusion is not None
    assert isinstance(transformer.decoder.relation, ProgressiveRelationEmbedding)
    assert transformer.decoder.query_scale is not None  # Relation DETR's conditional query scaling
    assert isinstance(transformer.branches["hybrid"], HybridBranch)
    assert set(model.extra_losses) == {"salience", "hybrid"}


def test_salience_lp_trains_and_evaluates_with_train_net(tiny, tmp_path):
    rows = _train(SALIENCE_LP, tiny, tmp_path / "out")
    losses = [r for r in rows if "total_loss" in r]
    assert len(losses) == 4 and all(math.isfinite(r["total_loss"]) for r in losses)
    assert {"loss_salience", "loss_class_hybrid", "loss_class_dn"} <= set(losses[-1])
    assert "bbox/AP" in rows[-1]
    with open(tmp_path / "out" / "relation_weights.json") as f:
        assert len(json.load(f)["lambda"]) == 2  # one row per decoder layer


def test_example_attention_variant_changes_only_the_self_attention():
    variant = instantiate(LazyConfig.load(BOX_DISTANCE).model)
    base = instantiate(LazyConfig.load(SALIENCE).model)
    assert type(variant.transformer.decoder) is DeformableDecoder
    for layer in variant.transformer.decoder.layers:
        assert type(layer) is DeformableDecoderLayer and isinstance(layer.self_attn, BoxDistanceSelfAttention)
    extra = set(variant.state_dict()) - set(base.state_dict())
    assert extra == {f"transformer.decoder.layers.{i}.self_attn.distance_scale" for i in range(2)}
    assert set(base.state_dict()) <= set(variant.state_dict())
    assert all(type(layer.self_attn) is QuerySelfAttention for layer in base.transformer.decoder.layers)


def test_example_attention_variant_with_zero_penalty_is_the_base_model():
    torch.manual_seed(0)
    # every top-k detection (no duplicate suppression), so that both give the same number per image
    base_cfg, variant_cfg = LazyConfig.load(SALIENCE), LazyConfig.load(BOX_DISTANCE)
    base_cfg.model.nms_iou_threshold = variant_cfg.model.nms_iou_threshold = None
    base, variant = instantiate(base_cfg.model).eval(), instantiate(variant_cfg.model).eval()
    variant.load_state_dict(base.state_dict(), strict=False)
    batch = awkward_batch(base.num_classes)
    with torch.no_grad():
        for layer in variant.transformer.decoder.layers:
            layer.self_attn.distance_scale.zero_()
        expected, same = base(batch), variant(batch)
        for layer in variant.transformer.decoder.layers:
            layer.self_attn.distance_scale.fill_(5.0)
        different = variant(batch)
    for a, b, c in zip(expected, same, different):
        torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-5, atol=1e-3)
        assert not torch.allclose(c["scores"], a["scores"])


def test_example_attention_variant_trains_with_train_net(tiny, tmp_path):
    rows = _train(BOX_DISTANCE, tiny, tmp_path / "out")
    assert all(math.isfinite(r["total_loss"]) for r in rows if "total_loss" in r)
    assert "bbox/AP" in rows[-1]
    state = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    scale = state["transformer.decoder.layers.1.self_attn.distance_scale"]
    assert not torch.equal(scale, torch.ones_like(scale))


def test_example_attention_variant_gets_gradients_from_the_second_layer_on():
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(BOX_DISTANCE).model).train()
    losses = model(awkward_batch(model.num_classes))
    sum(losses.values()).backward()
    first, second = (layer.self_attn.distance_scale.grad for layer in model.transformer.decoder.layers)
    assert first is None or not first.any()  # layer 0 has no boxes to relate
    assert second is not None and second.abs().min() > 0
