"""Swin, ConvNeXt and FocalNet backbones (the official model zoo's large backbones) and their checkpoint conversion.

Small variants of the same classes test shapes, strides, freezing and weight loading. The real Swin-L, ConvNeXt-L
and FocalNet-L configs are built on the meta device and checked against the official backbones' state-dict keys
and shapes (``tests/fixtures/official_backbone_keys.json``, recorded from the official code): the converter must map
the official key set onto ours exactly. Numerical equality with the official backbones (bit-exact in float32) was
measured outside the test suite, since it needs the official code.
"""

import math
import os

import pytest
import torch
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer

from core.lazy import instantiate
from modeling.backbones import ConvNeXtBackbone, FocalNetBackbone, SwinBackbone
from scripts.convert_checkpoint import convert_state_dict
from tests.modeling.official_backbones import config_with_91_classes, convert_backbone_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "projects", "salience_detr", "configs")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "official_backbone_keys.json")

SWIN_SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7, drop_path_rate=0.1)
CONVNEXT_SMALL = dict(dims=(8, 16, 32, 64), depths=(1, 1, 2, 1), drop_path_rate=0.1)
FOCALNET_SMALL = dict(embed_dim=16, depths=(1, 1, 2, 1), focal_levels=(2, 2, 3, 3), drop_path_rate=0.1)
SMALL = {
    "swin": (SwinBackbone, SWIN_SMALL),
    "convnext": (ConvNeXtBackbone, CONVNEXT_SMALL),
    "focalnet": (FocalNetBackbone, FOCALNET_SMALL),
}
# (H, W) of stages 1..3 for inputs of 200x296 and 97x131 (neither a multiple of 32 nor of the window size)
EXPECTED_SIZES = {
    "swin": ([(25, 37), (13, 19), (7, 10)], [(12, 16), (6, 8), (3, 4)]),
    "convnext": ([(25, 37), (12, 18), (6, 9)], [(12, 16), (6, 8), (3, 4)]),
    "focalnet": ([(25, 37), (13, 19), (7, 10)], [(13, 17), (7, 9), (4, 5)]),
}
# parameters of the official models (num_classes=91), counted from randomly initialised official models
OFFICIAL_PARAMS = {"swin_l": 226_208_963, "convnext_l": 227_443_823, "focalnet_l": 236_963_111}


def _small(kind, **overrides):
    cls, kwargs = SMALL[kind]
    torch.manual_seed(0)
    return cls(**{**kwargs, **overrides})


def _perturbed(module):
    """Randomises norms and scales (initialised to constants) so that every branch shows in the outputs."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim == 1 or "gamma" in name or "layer_scale" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return module


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_stage_shapes_channels_and_strides(kind):
    backbone = _small(kind).eval()
    width = SMALL[kind][1].get("embed_dim") or SMALL[kind][1]["dims"][0]
    assert backbone.out_features == ["stage1", "stage2", "stage3"]
    assert backbone.out_channels == [2 * width, 4 * width, 8 * width]
    assert backbone.strides == [8, 16, 32]
    for (batch, height, width_px), sizes in zip([(2, 200, 296), (1, 97, 131)], EXPECTED_SIZES[kind]):
        outputs = backbone(torch.randn(batch, 3, height, width_px))
        assert list(outputs) == backbone.out_features
        assert [tuple(t.shape) for t in outputs.values()] == [
            (batch, c, *s) for c, s in zip(backbone.out_channels, sizes)
        ]
        assert all(torch.isfinite(t).all() for t in outputs.values())


def test_focalnet_output_norms_normalise_each_returned_stage():
    backbone = _small("focalnet").eval()
    assert sorted(backbone.output_norms) == ["stage1", "stage2", "stage3"]
    for feature in backbone(torch.randn(1, 3, 64, 96)).values():
        torch.testing.assert_close(feature.mean(1), torch.zeros_like(feature[:, 0]), atol=1e-5, rtol=0)
    assert _small("focalnet", output_norms=False).output_norms is None


@pytest.mark.parametrize(
    "kind, stem, stage0",
    [
        ("swin", ["features.0"], ["features.1", "features.2"]),
        ("convnext", ["features.0"], ["features.1", "features.2"]),
        ("focalnet", ["patch_embed"], ["layers.0"]),
    ],
)
def test_freeze_at_semantics(kind, stem, stage0):
    backbone = _small(kind, freeze_at=2)
    assert backbone.frozen_modules == stem + stage0
    for name, param in backbone.named_parameters():
        assert param.requires_grad != name.startswith(tuple(f"{m}." for m in stem + stage0)), name
    backbone.train()
    for name, module in backbone.named_modules():
        frozen = any(name == m or name.startswith(f"{m}.") for m in stem + stage0)
        assert module.training != frozen, name
    assert _small(kind, freeze_at=1).frozen_modules == stem
    assert all(p.requires_grad for p in _small(kind, freeze_at=0).parameters())


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_stages_after_the_last_returned_one_are_not_built(kind):
    backbone = _small(kind, out_indices=(0, 1), freeze_at=5)
    outputs = backbone(torch.randn(1, 3, 64, 64))
    assert list(outputs) == ["stage0", "stage1"] and backbone.strides == [4, 8]
    if kind == "focalnet":
        assert len(backbone.layers) == 2 and not hasattr(backbone.layers[1], "downsample")
        assert backbone.frozen_modules == ["patch_embed", "layers.0", "layers.1"]
    else:
        assert len(backbone.features) == 4  # stem, stage 0, downsample, stage 1
        assert backbone.frozen_modules == ["features.0", "features.1", "features.2", "features.3"]


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_bad_arguments_are_rejected(kind):
    with pytest.raises(ValueError, match="increasing"):
        _small(kind, out_indices=(3, 1))
    with pytest.raises(ValueError, match="out_indices"):
        _small(kind, out_indices=(4,))
    with pytest.raises(ValueError, match="freeze_at"):
        _small(kind, freeze_at=6)
    with pytest.raises(ValueError, match="depths"):
        _small(kind, depths=(1, 1, 1))


def _torchvision_reference(kind):
    torch.manual_seed(1)
    if kind == "swin":
        kwargs = SWIN_SMALL
        return SwinTransformer(
            patch_size=[4, 4],
            embed_dim=kwargs["embed_dim"],
            depths=list(kwargs["depths"]),
            num_heads=list(kwargs["num_heads"]),
            window_size=[7, 7],
        )
    dims, depths = CONVNEXT_SMALL["dims"], CONVNEXT_SMALL["depths"]
    return ConvNeXt([CNBlockConfig(dims[i], dims[i + 1] if i < 3 else None, depths[i]) for i in range(4)])


@pytest.mark.parametrize("kind", ["swin", "convnext"])
def test_torchvision_layout_weights_load_and_compute_like_torchvision(kind, tmp_path):
    reference = _perturbed(_torchvision_reference(kind)).eval()
    state = reference.state_dict()
    if kind == "swin":  # constant buffers may be absent from a weights file
        state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    path = tmp_path / "weights.pth"
    torch.save({"model": state}, path)
    backbone = _small(kind, weights=str(path)).eval()
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(tensor, reference.state_dict()[name], rtol=0, atol=0, msg=name)
    images = torch.randn(1, 3, 97, 131)
    x, expected = images, []
    for index, layer in enumerate(reference.features):
        x = layer(x)
        if index in (3, 5, 7):
            expected.append(x.permute(0, 3, 1, 2) if kind == "swin" else x)
    for got, want in zip(backbone(images).values(), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_microsoft_layout_focalnet_weights_load(tmp_path):
    full = _perturbed(_small("focalnet", out_indices=(0, 1, 2, 3), output_norms=False))
    state = dict(full.state_dict())
    state.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128), "head.weight": torch.zeros(5, 128)})
    path = tmp_path / "focalnet.pth"
    torch.save({"model": state}, path)
    backbone = _small("focalnet", out_indices=(1, 2), weights=str(path))
    loaded = backbone.state_dict()
    assert "layers.3.blocks.0.gamma_1" not in loaded and "layers.2.downsample.proj.weight" not in loaded
    for name, tensor in loaded.items():
        if not name.startswith("output_norms."):
            torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_weights_with_missing_or_unknown_keys_are_an_error(kind, tmp_path):
    state = dict(_small(kind).state_dict())
    name = next(k for k in state if k.endswith("weight") and not k.startswith("output_norms"))
    incomplete = {k: v for k, v in state.items() if k != name}
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(KeyError, match="missing"):
        _small(kind, weights=str(tmp_path / "incomplete.pth"))
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(KeyError, match=r"extra\.weight"):
        _small(kind, weights=str(tmp_path / "extra.pth"))
    with pytest.raises(FileNotFoundError):
        _small(kind, weights=str(tmp_path / "nowhere.pth"))


def _official_layout(kind, state):
    """Our small backbone's state dict under the official full-model names (see the fixture for the real ones)."""
    out = {}
    for key, value in state.items():
        if kind == "convnext":
            out[f"backbone.{key}"] = value
        elif key.startswith("output_norms."):
            stage = key.split(".")[1].removeprefix("stage")
            out[f"backbone.1.norm{stage}.{key.split('.', 2)[2]}"] = value
        else:
            out[f"backbone.0.{key}"] = value
    return out


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_converted_official_layout_loads_strictly_and_computes_the_same(kind):
    source = _perturbed(_small(kind)).eval()
    official = {
        k: v.half() if v.is_floating_point() else v for k, v in _official_layout(kind, source.state_dict()).items()
    }
    converted = convert_state_dict(official, "salience_detr")
    target = _small(kind, freeze_at=0).eval()
    target.load_state_dict({k.removeprefix("backbone."): v for k, v in converted.items()}, strict=True)
    images = torch.randn(1, 3, 64, 96)
    source.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    )
    for got, want in zip(target(images).values(), source(images).values()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _config(name):
    return config_with_91_classes(os.path.join(CONFIG_DIR, f"salience_detr_{name}_4scale_12ep.py"))


@pytest.mark.parametrize("name", ["swin_l", "convnext_l", "focalnet_l"])
def test_official_large_backbone_keys_convert_onto_ours_exactly(name, official_keys):
    cfg = _config(name)
    backbone, ours, converted = convert_backbone_keys(cfg, official_keys[name], "salience_detr")
    assert converted == ours
    assert backbone.out_channels == list(cfg.model.neck.in_channels) == [384, 768, 1536]
    assert backbone.strides == [8, 16, 32] and cfg.model.backbone.weights is None
    official_params = sum(math.prod(s) for k, s in official_keys[name].items() if "relative_position_index" not in k)
    assert sum(p.numel() for p in backbone.parameters()) == official_params
    official = {k: torch.empty(shape, device="meta") for k, shape in official_keys[name].items()}
    with pytest.raises(KeyError, match="unexpected"):
        convert_state_dict(
            {**official, "backbone.0.features.9.weight": torch.empty(1, device="meta")}, reference_keys=ours
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_l", "convnext_l", "focalnet_l"])
def test_large_configs_instantiate_with_the_official_parameter_count(name):
    model = instantiate(_config(name).model)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    assert list(model.neck.in_channels) == model.backbone.out_channels
