"""Relation DETR's hybrid branch and its one-to-many loss, given to the model as components."""

import os

import pytest
import torch

from core.lazy import LazyConfig, instantiate
from tests.projects.batches import awkward_batch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects", "lp_detr", "configs", "relation_detr_r18_synthetic.py")


def _model(*overrides):
    torch.manual_seed(0)
    return instantiate(LazyConfig.apply_overrides(LazyConfig.load(CONFIG), list(overrides)).model).train()


def test_every_loss_of_the_branch_comes_with_the_suffix():
    model = _model()
    losses = model(awkward_batch(model.num_classes))
    plain = {k for k in losses if not k.endswith("_hybrid")}
    hybrid = {k[: -len("_hybrid")] for k in losses if k.endswith("_hybrid")}
    assert hybrid and hybrid <= plain and not any("dn" in k for k in hybrid)  # no denoising in the branch
    assert all(torch.isfinite(v) for v in losses.values())


def test_hybrid_loss_without_its_branch_is_an_error():
    model = _model("model.transformer.branches=null")
    with pytest.raises(ValueError, match=r"branch 'hybrid'.*model.transformer.branches.hybrid"):
        model(awkward_batch(model.num_classes))


def test_the_branch_decodes_only_in_training():
    model = _model()
    outputs = []
    model.transformer.branches["hybrid"].register_forward_hook(lambda module, args, out: outputs.append(out))
    model(awkward_batch(model.num_classes))
    model.eval()
    with torch.no_grad():
        model(awkward_batch(model.num_classes)[:1])
    trained, inferred = outputs
    assert trained.dec_boxes.shape[2] == model.transformer.branches["hybrid"].num_proposals
    assert inferred is None
