"""LP-DETR's progressive relation: reductions to Relation DETR and plain self-attention, gradients of the mixing
weights, bounded-memory computation, and degenerate boxes."""

import os

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from projects.lp_detr.modeling import (
    BoxRelationEmbedding,
    ProgressiveRelationEmbedding,
    box_relation_features,
    pairwise_giou,
)
from tests.projects.batches import awkward_batch
from tests.projects.relation_detr_spec import CONFIG_DIR, small_model_config
from tests.projects.test_relation_detr_model import NUM_CLASSES, perturb_zero_init

LP_MODEL_CONFIG = os.path.join(CONFIG_DIR, "models", "lp_detr_r50.py")


def _boxes(batch, num, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, num, 2, generator=generator)
    sizes = torch.rand(batch, num, 2, generator=generator) * 0.3 + 0.01
    return torch.cat([centres, sizes], -1)


def _inputs(batch):
    return [{k: v for k, v in record.items() if k not in ("boxes", "labels")} for record in batch]


def test_local_features_follow_the_relation_detr_formula():
    src = torch.tensor([[[0.5, 0.5, 0.2, 0.1]]])
    tgt = torch.tensor([[[0.3, 0.6, 0.1, 0.4]]])
    features = box_relation_features(src, tgt)[0, 0, 0]
    eps = 1e-5
    expected = torch.tensor(
        [
            torch.log(torch.tensor(0.2 / (0.2 + eps) + 1)),
            torch.log(torch.tensor(0.1 / (0.1 + eps) + 1)),
            torch.log(torch.tensor((0.2 + eps) / (0.1 + eps))),
            torch.log(torch.tensor((0.1 + eps) / (0.4 + eps))),
        ]
    )
    torch.testing.assert_close(features, expected)
    assert box_relation_features(src, tgt, with_giou=True).shape == (1, 1, 1, 5)


def test_relation_features_are_finite_for_degenerate_and_identical_boxes():
    boxes = torch.tensor(
        [[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3], [1.0, 1.0, 1.0, 1.0], [0.2, 0.2, 0.1, 0.1]]]
    )
    features = box_relation_features(boxes, boxes, with_giou=True)
    assert torch.isfinite(features).all()
    giou = pairwise_giou(boxes, boxes)
    assert torch.isfinite(giou).all() and bool(((giou >= -1) & (giou <= 1 + 1e-6)).all())
    assert giou[0, 4, 4] == pytest.approx(1.0, abs=1e-3)
    relation = ProgressiveRelationEmbedding(num_layers=3, with_giou=True)
    for layer_idx in range(3):
        assert torch.isfinite(relation(boxes, boxes, layer_idx)).all()


def test_lambda_table_and_normalisation():
    relation = ProgressiveRelationEmbedding(num_layers=4, lambda_init=0.33)
    table = relation.lambda_table()
    assert table.shape == (4, 3) and torch.allclose(table, torch.full((4, 3), 0.33))
    normalised = ProgressiveRelationEmbedding(num_layers=4, normalize_lambda=True)
    with torch.no_grad():
        normalised.layer_weights.normal_()
    assert torch.allclose(normalised.lambda_table().sum(-1), torch.ones(4))
    assert [relation.medium_scale(layer) for layer in range(4)] == [1.0, 1.5, 2.0, 2.5]


@pytest.mark.parametrize("medium_form", ["distance", "log"])
def test_scopes(medium_form):
    src, tgt = _boxes(2, 7, 0), _boxes(2, 5, 1)
    relation = ProgressiveRelationEmbedding(num_layers=4, with_giou=False, medium_form=medium_form)
    # at layer 0 the scaling factor is 1: medium == local
    torch.testing.assert_close(relation.medium_features(src, tgt, 0), box_relation_features(src, tgt))
    # the medium features are flatter at deeper layers
    local = box_relation_features(src, tgt)
    assert bool((relation.medium_features(src, tgt, 3)[..., :2] <= local[..., :2] + 1e-7).all())
    # the global relation is one constant bias per head
    with torch.no_grad():
        relation.layer_weights.copy_(torch.tensor([0.0, 0.0, 1.0]))
    bias = relation(src, tgt, 2)
    assert torch.equal(bias, bias[:, :, :1, :1].expand_as(bias))


def _copy_relation(source: BoxRelationEmbedding, target: BoxRelationEmbedding):
    with torch.no_grad():
        target.proj.weight.copy_(source.proj.weight)
        target.proj.bias.copy_(source.proj.bias)


def test_progressive_relation_reduces_to_relation_detr_on_the_same_weights():
    """Lambda = (1, 0, 0), no GIoU and all heads: the decoder computes exactly what Relation DETR computes."""
    torch.manual_seed(0)
    relation_model = instantiate(small_model_config()).eval()
    lp_cfg = small_model_config(LP_MODEL_CONFIG)
    lp_cfg.transformer.decoder.relation.with_giou = False
    lp_cfg.transformer.decoder.relation.num_relation_heads = 8
    lp_model = instantiate(lp_cfg).eval()
    missing, unexpected = lp_model.load_state_dict(relation_model.state_dict(), strict=False)
    assert missing == ["transformer.decoder.relation.layer_weights"] and not unexpected
    with torch.no_grad():
        lp_model.transformer.decoder.relation.layer_weights.copy_(torch.tensor([1.0, 0.0, 0.0]))
        inputs = _inputs(awkward_batch(NUM_CLASSES))
        expected = relation_model.predict(inputs)
        actual = lp_model.predict(inputs)
    torch.testing.assert_close(actual.dec_logits, expected.dec_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(actual.dec_boxes, expected.dec_boxes, atol=1e-6, rtol=0)


def test_no_relation_heads_is_plain_self_attention():
    torch.manual_seed(0)
    lp_cfg = small_model_config(LP_MODEL_CONFIG)
    lp_cfg.transformer.decoder.relation.num_relation_heads = 0
    model = instantiate(lp_cfg).eval()
    relation = model.transformer.decoder.relation
    assert not relation.enabled and relation.proj is None
    boxes = _boxes(1, 4, 0)
    assert torch.equal(relation(boxes, boxes, 1), torch.zeros(1, 8, 4, 4))
    with torch.no_grad():
        inputs = _inputs(awkward_batch(NUM_CLASSES))
        with_k0 = model.predict(inputs)
        model.transformer.decoder.relation = None
        plain = model.predict(inputs)
    assert torch.equal(with_k0.dec_logits, plain.dec_logits) and torch.equal(with_k0.dec_boxes, plain.dec_boxes)


def test_partial_relation_heads_bias_only_the_first_heads():
    relation = ProgressiveRelationEmbedding(num_layers=2, num_relation_heads=3)
    bias = relation(_boxes(2, 6, 0), _boxes(2, 6, 1), 1)
    assert bias.shape == (2, 8, 6, 6) and torch.equal(bias[:, 3:], torch.zeros(2, 5, 6, 6))
    assert bias[:, :3].abs().sum() > 0


@pytest.mark.parametrize("cls", [BoxRelationEmbedding, ProgressiveRelationEmbedding])
def test_chunked_and_checkpointed_relation_equal_the_direct_one(cls):
    kwargs = {"num_layers": 3} if cls is ProgressiveRelationEmbedding else {}
    torch.manual_seed(0)
    direct = cls(**kwargs)
    if cls is ProgressiveRelationEmbedding:
        with torch.no_grad():
            direct.layer_weights.normal_()
    # float64, so that only a different order of summation could make the results differ
    direct = direct.double()
    src, tgt = _boxes(2, 23, 0).double(), _boxes(2, 23, 1).double()
    grad_out = torch.randn(2, 8, 23, 23, dtype=torch.float64)
    results = []
    for chunk_size, checkpoint in [(None, False), (5, False), (None, True), (7, True)]:
        module = cls(**kwargs, chunk_size=chunk_size, checkpoint=checkpoint).double()
        module.load_state_dict(direct.state_dict())
        out = module(src, tgt, 2)
        (out * grad_out).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in module.parameters()]))
    reference_out, reference_grads = results[0]
    for out, grads in results[1:]:
        torch.testing.assert_close(out, reference_out, atol=1e-12, rtol=1e-12)
        for grad, reference in zip(grads, reference_grads):
            torch.testing.assert_close(grad, reference, atol=1e-10, rtol=1e-10)


def test_lp_detr_training_step_reaches_every_parameter_including_lambda():
    torch.manual_seed(0)
    model = instantiate(small_model_config(LP_MODEL_CONFIG))
    perturb_zero_init(model)
    model.train()
    losses = model(awkward_batch(NUM_CLASSES))
    sum(losses.values()).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert not [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    lambda_grad = model.transformer.decoder.relation.layer_weights.grad
    # rows 1 and 2 feed decoder layers 1 and 2; row 0 belongs to the first layer, which has no relation
    assert (lambda_grad[1:] != 0).all() and (lambda_grad[0] == 0).all()


def test_lp_detr_configs():
    cfg = LazyConfig.load(os.path.join(CONFIG_DIR, "lp_detr_r50_4scale_12ep.py"))
    relation = cfg.model.transformer.decoder.relation
    assert relation.num_layers == 6 and relation.with_giou and relation.lambda_init == 0.33
    assert cfg.train.epochs == 12 and cfg.optimizer.lr == 1e-4
    cfg24 = LazyConfig.load(os.path.join(CONFIG_DIR, "lp_detr_r50_4scale_24ep.py"))
    assert cfg24.train.epochs == 24 and list(cfg24.lr_multiplier.scheduler.milestones) == [20]
    swin = LazyConfig.load(os.path.join(CONFIG_DIR, "lp_detr_swin_l_4scale_12ep.py"))
    assert tuple(swin.model.neck.in_channels) == (384, 768, 1536)
    assert swin.model.transformer.decoder.relation.with_giou
