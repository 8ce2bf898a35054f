"""Salience DETR as a model: parameter counts, a full training step, and awkward batches.

Parameter counts are ``sum(p.numel() for p in model.parameters())``: every parameter once, frozen ones (stem and
``layer1`` of the backbone) included; frozen batch-norm statistics and affine terms are buffers and do not count.
The ResNet-50 count uses a randomly initialised backbone (no pretrained download) and 91 classes, as the issue
states the official number.
"""

import os

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from tests.parity_fixtures import load_spec
from tests.projects.batches import assert_detections_on_awkward_batch, awkward_batch, num_parameters, training_record
from tests.projects.salience_detr_spec import ROOT, model_config_from_spec, r50_model_config

OFFICIAL_R50_4SCALE_PARAMETERS = 56_080_495


def test_official_r50_4scale_parameter_count():
    cfg = r50_model_config()
    cfg.num_classes = 91
    assert num_parameters(instantiate(cfg)) == OFFICIAL_R50_4SCALE_PARAMETERS


@pytest.fixture(scope="module")
def spec():
    return load_spec("salience_detr_tiny")


def test_tiny_spec_parameter_count(spec):
    assert num_parameters(instantiate(model_config_from_spec(spec))) == spec["num_parameters"]


@pytest.fixture(scope="module")
def tiny_model(spec):
    torch.manual_seed(0)
    model = instantiate(model_config_from_spec(spec))
    # The box heads' last layers start at zero, which zeroes the gradients of their hidden layers; perturb them
    # so that every parameter must receive a non-zero gradient.
    with torch.no_grad():
        for head in [model.transformer.enc_box_head, *model.transformer.decoder.box_heads]:
            head.layers[-1].weight.normal_(std=1e-3)
    return model


def test_training_step_reaches_every_trainable_parameter(tiny_model, spec):
    tiny_model.train()
    tiny_model.zero_grad()
    losses = tiny_model(awkward_batch(spec["num_classes"]))
    expected = {"loss_class", "loss_bbox", "loss_giou", "loss_class_enc", "loss_class_dn", "loss_class_dn_0"}
    assert expected | {"loss_class_0", "loss_salience"} <= set(losses)
    assert set(losses) <= set(tiny_model.criterion.weight_dict)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    trainable = {n: p for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert not [n for n, p in trainable.items() if p.grad is None], "parameters without gradient"
    assert not [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()], "non-finite gradients"
    # the gates' attention-pool bias shifts every logit of a softmax alike: its gradient is zero in exact arithmetic
    # and float noise (sometimes exactly 0) in practice; every other parameter must get a non-zero gradient
    shift_invariant = [n for n in trainable if n.endswith("gate.attention_pool.bias")]
    assert shift_invariant and all(trainable[n].grad.abs().max() < 1e-6 for n in shift_invariant)
    zero = [n for n, p in trainable.items() if p.grad.abs().sum() == 0 and n not in shift_invariant]
    assert not zero, f"parameters with zero gradient: {zero}"
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.conv1", "backbone.layer1")) for n in frozen)


def test_inference_on_awkward_batch(tiny_model, spec):
    assert_detections_on_awkward_batch(tiny_model, spec["num_classes"], spec["postprocess_topk"])


def test_single_image_training_batch_of_one(tiny_model, spec):
    tiny_model.train()
    losses = tiny_model([training_record(128, 160, [[20.0, 30.0, 90.0, 100.0]], [0], seed=3)])
    assert torch.isfinite(sum(losses.values()))


CONFIG_DIR = os.path.join(ROOT, "projects", "salience_detr", "configs")


def test_coco_config_model():
    """The recipe is tested in tests/configs/test_recipes.py; here, what the model adds to it."""
    cfg12 = LazyConfig.load(os.path.join(CONFIG_DIR, "salience_detr_r50_4scale_12ep.py"))
    assert cfg12.model.criterion.weight_dict.num_decoder_layers == 6  # interpolated from the decoder
    assert cfg12.model.transformer.decoder.num_classes == cfg12.model.num_classes == 80


def test_synthetic_config_trains_and_evaluates_with_train_net(tmp_path):
    """A short CI training run of the synthetic config: the loss falls and the COCO evaluator runs."""
    import json

    from engine.defaults import default_argument_parser
    from tests.tools.train_net_helpers import register_tiny, tiny_opts
    from tools import train_net

    names = register_tiny(str(tmp_path / "data"), "salience_synthetic_smoke")
    opts = tiny_opts(str(tmp_path / "out"), names, max_iter=30, crop=False, **{"train.eval_period": 30})
    config = os.path.join(CONFIG_DIR, "salience_detr_r18_synthetic.py")
    train_net.main(default_argument_parser().parse_args(["--config-file", config, *opts]))
    with open(tmp_path / "out" / "metrics.json") as f:
        rows = [json.loads(line) for line in f]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses  # medians over a 20-iteration window
    final = rows[-1]
    assert {"bbox/AP", "bbox/AP50", "bbox/AP-spot"} <= set(final)
    assert os.path.isfile(tmp_path / "out" / "coco_instances_results.json")
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")
