"""Relation DETR as a model: parameter counts, loss weights, a full training step with the hybrid branch, and
awkward batches.

Parameter counts are ``sum(p.numel() for p in model.parameters())`` (frozen backbone parameters included, frozen
batch-norm statistics excluded); the ResNet-50 count uses a randomly initialised backbone and 91 classes, as the
official number does.
"""

import os

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from projects.lp_detr.modeling import repeat_targets
from tests.projects.batches import assert_detections_on_awkward_batch, awkward_batch, num_parameters, training_record
from tests.projects.relation_detr_spec import CONFIG_DIR, r50_model_config, small_model_config

OFFICIAL_R50_4SCALE_PARAMETERS = 48_869_312
NUM_CLASSES = 5


def test_official_r50_4scale_parameter_count():
    cfg = r50_model_config()
    cfg.num_classes = 91
    assert num_parameters(instantiate(cfg)) == OFFICIAL_R50_4SCALE_PARAMETERS


def test_weight_dict_matches_the_official_config():
    weights = instantiate(r50_model_config().criterion.weight_dict)
    base = {"loss_class": 1, "loss_bbox": 5, "loss_giou": 2}
    expected = dict(base)
    expected.update({f"{k}_dn": v for k, v in base.items()})
    for i in range(5):
        expected.update({f"{k}_{i}": v for k, v in base.items()})
        expected.update({f"{k}_dn_{i}": v for k, v in base.items()})
    expected.update({f"{k}_enc": v for k, v in base.items()})
    expected.update({f"{k}_hybrid": v for k, v in list(expected.items())})
    assert weights == expected and len(weights) == 78


def perturb_zero_init(model):
    """Perturbs the weights that start at zero and would zero other gradients at initialisation, so that every
    parameter must receive a non-zero gradient: the box heads' last layers (their hidden layers), and the encoder's
    deformable-attention weights (without them the queries' positions, hence ``level_embeds``, do not matter)."""
    transformer = model.transformer
    heads = [transformer.enc_box_head, transformer.branches.hybrid.box_head, *transformer.decoder.box_heads]
    with torch.no_grad():
        for head in heads:
            head.layers[-1].weight.normal_(std=1e-3)
        for layer in transformer.encoder.layers:
            layer.self_attn.attention_weights.weight.normal_(std=1e-3)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = instantiate(small_model_config())
    perturb_zero_init(model)
    return model


def test_training_step_reaches_every_trainable_parameter(small_model):
    small_model.train()
    small_model.zero_grad()
    calls = []
    relation = small_model.transformer.decoder.relation
    handle = relation.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    try:
        losses = small_model(awkward_batch(NUM_CLASSES))
    finally:
        handle.remove()
    # the relation feeds layers 1 and 2 of the one-to-one branch only (none in the hybrid branch)
    num_queries = calls[0][-1]
    assert len(calls) == 2 and all(shape[1:] == (8, num_queries, num_queries) for shape in calls)
    # every weighted key except the hybrid copies of the denoising keys (the hybrid branch has no denoising)
    weighted = {k for k in small_model.criterion.weight_dict if not ("_dn" in k and k.endswith("_hybrid"))}
    assert set(losses) == weighted
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    trainable = {n: p for n, p in small_model.named_parameters() if p.requires_grad}
    assert not [n for n, p in trainable.items() if p.grad is None], "parameters without gradient"
    assert not [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()], "non-finite gradients"
    assert not [n for n, p in trainable.items() if p.grad.abs().sum() == 0], "parameters with zero gradient"
    frozen = [n for n, p in small_model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.conv1", "backbone.layer1")) for n in frozen)


def test_hybrid_branch_runs_in_training_only(small_model):
    batch = awkward_batch(NUM_CLASSES)
    small_model.train()
    with torch.no_grad():
        output = small_model.predict(batch)
    hybrid = output.branches["hybrid"]
    num_layers = small_model.transformer.decoder.num_layers
    assert hybrid.dec_logits.shape == (num_layers, 3, 40, NUM_CLASSES) and hybrid.enc_boxes.shape == (3, 40, 4)
    small_model.eval()
    with torch.no_grad():
        assert "hybrid" not in small_model.predict(batch).branches


def test_hybrid_targets_are_repeated():
    targets = [
        {"boxes": torch.rand(2, 4), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    repeated = repeat_targets(targets, 6)
    assert repeated[0]["labels"].tolist() == [1, 3] * 6 and torch.equal(repeated[0]["boxes"][2:4], targets[0]["boxes"])
    assert repeated[1]["boxes"].shape == (0, 4)


def test_training_without_any_object_and_with_one_image(small_model):
    small_model.train()
    empty = small_model([training_record(64, 96, [], [], seed=4), training_record(96, 64, [], [], seed=5)])
    assert all(torch.isfinite(v) for v in empty.values())
    single = small_model([training_record(128, 160, [[20.0, 30.0, 90.0, 100.0]], [0], seed=3)])
    assert torch.isfinite(sum(single.values()))


def test_inference_on_awkward_batch(small_model):
    assert_detections_on_awkward_batch(small_model, NUM_CLASSES, 50)


def test_coco_config_model():
    """The recipe is tested in tests/configs/test_recipes.py; here, what the model adds to it."""
    cfg12 = LazyConfig.load(os.path.join(CONFIG_DIR, "relation_detr_r50_4scale_12ep.py"))
    model = cfg12.model
    assert model.transformer.num_queries == 900 and model.transformer.branches.hybrid.num_proposals == 1500
    assert model.extra_losses.hybrid.assign == 6 and model.num_detections == 300
    assert model.transformer.decoder.num_classes == model.num_classes == 80
    assert model.criterion.weight_dict.num_decoder_layers == 6
    cfg24 = LazyConfig.load(os.path.join(CONFIG_DIR, "relation_detr_r50_4scale_24ep.py"))
    assert cfg24.train.epochs == 24 and list(cfg24.lr_multiplier.scheduler.milestones) == [20]
