"""Inference folding (modeling/fusion.py): batch norms folded into convolutions, Salience DETR's RepVGG blocks merged.

The fused models must compute what the unfused ones compute (to 1e-10 of their magnitude in float64, 1e-4 in
float32), with random non-trivial norm statistics and affine terms; fusing is in place, idempotent, refused in
training mode, and reached from the user entry points (``scripts/demo.py --fuse``, ``tools/train_net.py
--eval-only --fuse``, ``scripts/analyze_model.py --fuse``).
"""

import importlib.util
import json
import logging
import os
from collections import defaultdict

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from core.lazy import LazyConfig, instantiate
from engine.checkpoint import DetectionCheckpointer
from engine.defaults import default_argument_parser
from modeling.backbones import BasicResNet, ResNetBackbone
from modeling.fusion import (
    FusedForInferenceError,
    fold_conv_norms,
    fuse_for_inference,
    is_fused_for_inference,
    merge_parallel_convs,
)
from modeling.necks import ChannelMapper
from projects.salience_detr.modeling.token_fusion import RepVGGPluXBlock, RepVGGPluXNetwork
from scripts import demo
from tests.tools.script_helpers import LP_DETR_CONFIG, SALIENCE_CONFIG, tiny_dataset, tiny_model_opts
from tests.tools.train_net_helpers import ROOT, tiny_opts
from tools import train_net

RELATION_CONFIG = os.path.join(ROOT, "projects", "lp_detr", "configs", "relation_detr_r18_synthetic.py")
NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)
#: conv-norm pairs of the full ResNets: the stem, 2 (basic) or 3 (bottleneck) per block, one per downsample
RESNET_PAIRS = {"resnet18": 1 + 8 * 2 + 3, "resnet50": 1 + 16 * 3 + 4}


def num_norms(model: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in model.modules())


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine terms far from the identity (mean +-0.5, var 0.3..3, weight 0.5..1.5)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) * (high - low) + low)

    for module in model.modules():
        if isinstance(module, NORMS):
            uniform(module.running_mean, -0.5, 0.5)
            uniform(module.running_var, 0.3, 3.0)
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.5, 0.5)


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((expected.double() - actual.double()).abs().max() / expected.double().abs().max().clamp_min(1e-30))


TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


# ---------------------------------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_fused_matches_unfused(name, dtype):
    torch.manual_seed(0)
    backbone = ResNetBackbone(name, out_features=("layer1", "layer2", "layer3", "layer4"), freeze_at=2)
    randomize_norms(backbone)
    backbone = backbone.to(dtype).eval()
    images = torch.randn(2, 3, 64, 96, dtype=dtype)
    with torch.no_grad():
        expected = backbone(images)
    assert num_norms(backbone) == RESNET_PAIRS[name]
    assert fuse_for_inference(backbone) is backbone
    assert num_norms(backbone) == 0
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == RESNET_PAIRS[name] and all(c.bias is not None and c.bias.dtype == dtype for c in convs)
    # the frozen stem and layer1 stay frozen, the rest trainable (as the convolutions' weights were)
    assert not backbone.conv1.bias.requires_grad and not backbone.layer1[0].conv1.bias.requires_grad
    assert backbone.layer4[0].conv1.bias.requires_grad
    with torch.no_grad():
        actual = backbone(images)
    for key in expected:
        assert relative_error(expected[key], actual[key]) < TOLERANCE[dtype], key


def test_basic_resnet_stem_sequential_and_trainable_batch_norms():
    torch.manual_seed(0)
    backbone = BasicResNet(width=8, depths=(2, 1, 1, 1), norm="BN")
    randomize_norms(backbone)
    backbone = backbone.double().eval()
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = backbone(images)
    # stem: conv-BN inside the Sequential, then its last conv with bn1; 2 + 1 + 1 + 1 blocks; 3 downsamples
    assert num_norms(backbone) == 2 + 5 * 2 + 3
    assert fold_conv_norms(backbone) == 2 + 5 * 2 + 3
    assert num_norms(backbone) == 0 and isinstance(backbone.bn1, nn.Identity)
    assert isinstance(backbone.conv1[1], nn.Identity) and isinstance(backbone.conv1[2], nn.ReLU)  # indices kept
    with torch.no_grad():
        actual = backbone(images)
    for key in expected:
        assert relative_error(expected[key], actual[key]) < 1e-10


def test_group_norm_and_unknown_norms_are_left_alone():
    class BatchNormWithActivation(nn.BatchNorm2d):  # timm's BatchNormAct2d computes more than a batch norm
        def forward(self, x):
            return torch.relu(super().forward(x))

    class Reordered(nn.Sequential):  # its own forward: the children's order says nothing
        def forward(self, x):
            return self[0](self[1](x))

    neck = ChannelMapper([8, 16], out_channels=16, num_outs=3, num_groups=4).eval()
    model = nn.ModuleDict(
        {
            "neck": neck,
            "subclass": nn.Sequential(nn.Conv2d(4, 4, 3), BatchNormWithActivation(4)),
            "batch_statistics": nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)),
            "reordered": Reordered(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),
            "folded": nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        }
    ).eval()
    assert fold_conv_norms(model) == 1
    assert isinstance(model["folded"][1], nn.Identity)
    assert isinstance(model["subclass"][1], BatchNormWithActivation)
    assert isinstance(model["batch_statistics"][1], nn.BatchNorm2d)
    assert isinstance(model["reordered"][1], nn.BatchNorm2d)
    assert all(isinstance(conv[1], nn.GroupNorm) for conv in neck.convs)


# ---------------------------------------------------------------------------------------------------------------------
# Salience DETR's RepVGG blocks
# ---------------------------------------------------------------------------------------------------------------------


def test_repvgg_block_becomes_one_grouped_3x3_convolution():
    torch.manual_seed(0)
    block = RepVGGPluXBlock(16, groups=4)
    randomize_norms(block)
    block = block.double().eval()
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        assert block.reparameterize() is True
        actual = block(x)
    assert block.conv1x1 is None
    conv = block.conv3x3
    assert type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.groups == 4 and conv.padding == (1, 1)
    assert conv.bias is not None and conv.weight.dtype == torch.float64 and not conv.training
    assert relative_error(expected, actual) < 1e-10
    assert block.reparameterize() is False  # once is enough
    assert not any(isinstance(m, NORMS) for m in block.modules())


def test_repvgg_block_refuses_training_mode():
    with pytest.raises(FusedForInferenceError, match="eval"):
        RepVGGPluXBlock(16, groups=2).train().reparameterize()


def test_token_fusion_network_fused_matches_unfused():
    torch.manual_seed(0)
    network = RepVGGPluXNetwork(channels=16, num_levels=3, groups=4, num_blocks=2)
    randomize_norms(network)
    network = network.double().eval()
    maps = [torch.randn(1, 16, h, w, dtype=torch.float64) for h, w in ((12, 10), (6, 5), (3, 3))]
    with torch.no_grad():
        expected = network(maps)
    fuse_for_inference(network)
    assert num_norms(network) == 0
    blocks = [m for m in network.modules() if isinstance(m, RepVGGPluXBlock)]
    assert len(blocks) == 2 * 2 * 2 and all(b.conv1x1 is None for b in blocks)
    with torch.no_grad():
        actual = network(maps)
    for e, a in zip(expected, actual):
        assert relative_error(e, a) < 1e-10


def test_merge_refuses_branches_that_are_not_alike():
    same = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="centred and alike"):
        merge_parallel_convs([(same, None), (nn.Conv2d(4, 4, 1, stride=2), None)])
    with pytest.raises(ValueError, match="centred and alike"):
        merge_parallel_convs([(same, None), (nn.Conv2d(4, 4, 3, padding=0), None)])
    with pytest.raises(ValueError, match="centred and alike"):
        merge_parallel_convs([(same, None), (nn.Conv2d(4, 4, 1, groups=2), None)])


# ---------------------------------------------------------------------------------------------------------------------
# whole detectors
# ---------------------------------------------------------------------------------------------------------------------


def build_detector(config: str, seed: int = 0) -> nn.Module:
    """The config's model, random weights: norms far from the identity, non-zero box-head outputs."""
    torch.manual_seed(seed)
    model = instantiate(LazyConfig.load(config).model)
    randomize_norms(model, seed)
    with torch.no_grad():  # the box heads' last layers start at zero: the boxes would not depend on the features
        for head in [model.transformer.enc_box_head, *model.transformer.decoder.box_heads]:
            head.layers[-1].weight.normal_(std=1e-2)
    return model


def detector_batch() -> list[dict]:
    """Two images of different sizes (the second one resized from twice its size)."""
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=generator),
            "height": 96,
            "width": 128,
        },
        {
            "image": torch.randint(0, 256, (3, 80, 64), dtype=torch.uint8, generator=generator),
            "height": 160,
            "width": 128,
        },
    ]


def predictions(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """The last decoder layer's logits and boxes, and the detections, of :func:`detector_batch`."""
    batch = detector_batch()
    with torch.no_grad():
        output = model.predict(batch)
        return output.dec_logits[-1], output.dec_boxes[-1], model(batch)


#: norms of the synthetic configs: BasicResNet (2-2-2-2 blocks: stem 2, blocks 16, downsamples 3); Salience DETR's
#: token fusion (4 levels: 3 lateral + 3 downsample convs, 6 CSP layers of 2 branches and 1 RepVGG block of 2 norms)
DETECTORS = {
    "salience_detr": (SALIENCE_CONFIG, 21 + 3 + 3 + 6 * 2 + 6 * 2, 6),
    "relation_detr": (RELATION_CONFIG, 21, 0),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_detector_fused_matches_unfused(detector, dtype):
    config, expected_norms, expected_blocks = DETECTORS[detector]
    model = build_detector(config).to(dtype).eval()
    logits, boxes, detections = predictions(model)
    assert num_norms(model) == expected_norms
    fuse_for_inference(model)
    assert num_norms(model) == 0 and is_fused_for_inference(model)
    blocks = [m for m in model.modules() if isinstance(m, RepVGGPluXBlock)]
    assert len(blocks) == expected_blocks and all(b.conv1x1 is None for b in blocks)
    fused_logits, fused_boxes, fused_detections = predictions(model)
    tolerance = TOLERANCE[dtype]
    assert relative_error(logits, fused_logits) < tolerance
    assert relative_error(boxes, fused_boxes) < tolerance
    assert boxes.std() > 1e-3  # the boxes depend on the features (not only on the proposals' anchors)
    for before, after in zip(detections, fused_detections):
        assert relative_error(before["scores"].sort().values, after["scores"].sort().values) < tolerance
        # each detection has its counterpart (same label, score and box): near-equal scores may swap their ranks
        score_tolerance = tolerance * before["scores"].abs().max()
        box_tolerance = tolerance * before["boxes"].abs().max()
        for score, label, box in zip(before["scores"], before["labels"], before["boxes"]):
            same_label = after["labels"] == label
            close_score = (after["scores"] - score).abs() <= score_tolerance
            close_box = (after["boxes"] - box).abs().amax(dim=-1) <= box_tolerance
            assert (same_label & close_score & close_box).any()


def test_fusing_twice_changes_nothing():
    model = build_detector(SALIENCE_CONFIG).eval()
    fuse_for_inference(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = len(model._forward_pre_hooks)
    assert fuse_for_inference(model) is model
    assert fold_conv_norms(model) == 0
    assert len(model._forward_pre_hooks) == hooks
    again = model.state_dict()
    assert list(again) == list(state) and all(torch.equal(state[k], again[k]) for k in state)


def test_training_mode_is_refused_before_and_after_fusing():
    model = build_detector(RELATION_CONFIG)
    assert model.training
    with pytest.raises(FusedForInferenceError, match="training mode"):
        fuse_for_inference(model)
    assert num_norms(model) == 21  # nothing was changed
    model.eval()
    model.backbone.layer2.train()  # one submodule left in training mode is refused as well
    with pytest.raises(FusedForInferenceError, match="layer2"):
        fuse_for_inference(model)
    fuse_for_inference(model.eval())
    model.train()
    with pytest.raises(FusedForInferenceError, match="cannot train"):
        model(detector_batch())


def test_unfused_checkpoint_loads_before_fusing():
    source = build_detector(SALIENCE_CONFIG, seed=1).eval()
    expected = predictions(source)[0]
    model = build_detector(SALIENCE_CONFIG, seed=2)  # other weights, same layout
    model.load_state_dict(source.state_dict())
    fuse_for_inference(model.eval())
    assert relative_error(expected, predictions(model)[0]) < TOLERANCE[torch.float32]
    fused_keys = set(model.state_dict())
    assert not any(".bn1." in k or k.endswith("conv1x1.0.weight") for k in fused_keys)  # norms are gone
    assert "backbone.layer1.0.conv1.bias" in fused_keys


# ---------------------------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_salience(tmp_path_factory):
    """``(weights, model opts, val dicts, data names)`` of a random tiny Salience DETR with random norm statistics."""
    train_name, val_name, records = tiny_dataset(tmp_path_factory.mktemp("fusion_data"), "fusion_tiny")
    opts = tiny_model_opts(val_name)
    torch.manual_seed(0)
    model = instantiate(LazyConfig.apply_overrides(LazyConfig.load(SALIENCE_CONFIG), opts).model)
    randomize_norms(model)
    out = tmp_path_factory.mktemp("fusion_weights")
    DetectionCheckpointer(model, str(out), save_to_disk=True).save("model")
    return str(out / "model.pth"), opts, records, (train_name, val_name)


def assert_same_detections(expected: list[dict], actual: list[dict], key: str = "file_name") -> None:
    """The same detections per image up to float rounding (matched by category, score and box: near-equal scores
    may come in another order)."""
    by_image = defaultdict(list)
    for r in actual:
        by_image[r[key]].append(r)
    assert len(expected) == len(actual) and {r[key] for r in expected} == set(by_image)
    for r in expected:
        assert any(
            o["category_id"] == r["category_id"]
            and abs(o["score"] - r["score"]) < 1e-5
            and max(abs(a - b) for a, b in zip(o["bbox"], r["bbox"])) < 1e-2
            for o in by_image[r[key]]
        ), r


def test_demo_fuse_gives_the_same_detections(tiny_salience, tmp_path, caplog):
    weights, opts, records, _ = tiny_salience
    opts = [*opts, "model.nms_iou_threshold=null"]  # all 20: a suppression decision at the threshold could flip
    inputs = [r["file_name"] for r in records[:2]]
    results = {}
    for flag in ([], ["--fuse"]):
        out = tmp_path / ("fused" if flag else "plain")
        argv = ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--input", *inputs, "--output", str(out)]
        with caplog.at_level(logging.INFO, logger="modeling.fusion"):
            caplog.clear()
            paths = demo.main([*argv, "--device", "cpu", "--score-threshold", "0", *flag, "--", *opts])
        assert ("Fused for inference" in caplog.text) == bool(flag)
        with open(paths["results"]) as f:
            results[bool(flag)] = json.load(f)
    assert len(results[False]) == 20 * len(inputs)
    assert_same_detections(results[False], results[True])


def test_train_net_eval_only_fuse_gives_the_same_results(tiny_salience, tmp_path, caplog):
    weights, opts, _, names = tiny_salience
    results = {}
    for flag in ([], ["--fuse"]):
        out = str(tmp_path / ("fused" if flag else "plain"))
        argv = ["--config-file", SALIENCE_CONFIG, "--eval-only", *flag]
        argv += tiny_opts(out, names, max_iter=1, crop=False, **{"train.init_checkpoint": weights}) + opts
        with caplog.at_level(logging.INFO, logger="modeling.fusion"):
            caplog.clear()
            metrics = train_net.main(default_argument_parser().parse_args(argv))
        assert ("Fused for inference" in caplog.text) == bool(flag)
        with open(os.path.join(out, "coco_instances_results.json")) as f:
            results[bool(flag)] = (metrics, json.load(f))
    assert_same_detections(results[False][1], results[True][1], key="image_id")
    assert results[True][0]["bbox"]["AP"] == pytest.approx(results[False][0]["bbox"]["AP"], abs=1e-6)


def test_train_net_refuses_fuse_without_eval_only():
    args = default_argument_parser().parse_args(["--config-file", LP_DETR_CONFIG, "--fuse"])
    with pytest.raises(ValueError, match="--eval-only"):
        train_net.main(args)


def test_analyze_model_fuse_flag():
    spec = importlib.util.spec_from_file_location("analyze_model", os.path.join(ROOT, "scripts", "analyze_model.py"))
    analyze_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analyze_model)
    assert analyze_model.parse_args(["--config-file", SALIENCE_CONFIG, "--fuse"]).fuse
    assert not analyze_model.parse_args(["--config-file", SALIENCE_CONFIG]).fuse
    plain, fused = (
        analyze_model.analyze(SALIENCE_CONFIG, [], ("parameter",), (96, 128), "cpu", fuse=fuse)
        for fuse in (False, True)
    )
    assert fused["fused"] and not plain["fused"]
    # every trainable BN's two affine terms become one conv bias; each RepVGG block loses its 1x1 branch
    assert fused["parameter"]["total"] < plain["parameter"]["total"]
    assert "[fused]" in analyze_model.markdown_table([fused])


def test_folded_convolutions_keep_the_channels_last_layout():
    conv = torch.nn.Conv2d(4, 6, 3, padding=1).to(memory_format=torch.channels_last).eval()
    norm = FrozenBatchNorm2d(6)
    model = torch.nn.Sequential(conv, norm).eval()
    fuse_for_inference(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
