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
from tests.projects.relation_detr_spec import CONFIG_DIR, r50_model_config, small_model_config

OFFICIAL_R50_4SCALE_PARAMETERS = 48_869_312
NUM_CLASSES = 5


def _num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_official_r50_4scale_parameter_count():
    cfg = r50_model_config()
    cfg.num_classes = 91
    assert _num_parameters(instantiate(cfg)) == OFFICIAL_R50_4SCALE_PARAMETERS


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


def _record(height, width, boxes, labels, seed):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    return {
        "image": image,
        "height": 2 * height,
        "width": 2 * width,
        "image_id": seed,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _awkward_batch():
    """No objects, one object, many small objects; three different image sizes."""
    small = [[x, y, x + 5.0, y + 4.0] for x in range(2, 120, 10) for y in range(3, 90, 11)]
    return [
        _record(96, 128, [], [], seed=0),
        _record(80, 64, [[10.0, 12.0, 50.0, 70.0]], [NUM_CLASSES - 1], seed=1),
        _record(100, 130, small, [i % NUM_CLASSES for i in range(len(small))], seed=2),
    ]


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
        losses = small_model(_awkward_batch())
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
    batch = _awkward_batch()
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
    empty = small_model([_record(64, 96, [], [], seed=4), _record(96, 64, [], [], seed=5)])
    assert all(torch.isfinite(v) for v in empty.values())
    single = small_model([_record(128, 160, [[20.0, 30.0, 90.0, 100.0]], [0], seed=3)])
    assert torch.isfinite(sum(single.values()))


def test_inference_on_awkward_batch(small_model):
    small_model.eval()
    batch = _awkward_batch()
    with torch.no_grad():
        detections = small_model(batch)
        alone = small_model(batch[1:2])
    assert len(detections) == len(batch)
    for result, record in zip(detections, batch):
        assert result["boxes"].shape == (50, 4)
        assert result["scores"].shape == result["labels"].shape == (50,)
        assert bool(((result["labels"] >= 0) & (result["labels"] < NUM_CLASSES)).all())
        assert torch.isfinite(result["boxes"]).all()
        centres_x = (result["boxes"][:, 0] + result["boxes"][:, 2]) / 2
        assert bool((centres_x <= record["width"] + 1e-3).all())  # in original-image pixels (2x the input)
    assert alone[0]["boxes"].shape == (50, 4)


def test_coco_configs_follow_the_official_recipe():
    cfg12 = LazyConfig.load(os.path.join(CONFIG_DIR, "relation_detr_r50_4scale_12ep.py"))
    assert cfg12.optimizer.lr == 1e-4 and cfg12.optimizer.weight_decay == 1e-4
    params = cfg12.optimizer.params
    assert params.weight_decay_norm == 0 and params.weight_decay_bias == 0
    assert params.lr_factors == {"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1}
    assert cfg12.train.clip_grad.enabled and cfg12.train.clip_grad.params.max_norm == 0.1
    assert cfg12.lr_multiplier.warmup_iters == 1000
    assert cfg12.train.epochs == 12 and list(cfg12.lr_multiplier.scheduler.milestones) == [10]
    model = cfg12.model
    assert model.transformer.num_queries == 900 and model.transformer.branches.hybrid.num_proposals == 1500
    assert model.extra_losses.hybrid.assign == 6 and model.num_detections == 300
    assert model.transformer.decoder.num_classes == model.num_classes == 80
    assert model.criterion.weight_dict.num_decoder_layers == 6
    cfg24 = LazyConfig.load(os.path.join(CONFIG_DIR, "relation_detr_r50_4scale_24ep.py"))
    assert cfg24.train.epochs == 24 and list(cfg24.lr_multiplier.scheduler.milestones) == [20]
