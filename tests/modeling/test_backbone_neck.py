"""ResNet backbone, timm wrapper and channel mapper: shapes, freezing, weight loading, parameter layout."""

import os
import sys
import types

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from modeling.backbones import ResNetBackbone, TimmBackbone
from modeling.necks import ChannelMapper
from tests.parity_fixtures import fixture_dir


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return ResNetBackbone("resnet18", out_features=("layer2", "layer3", "layer4"), freeze_at=2)


def test_resnet18_stage_shapes(resnet18):
    assert resnet18.out_features == ["layer2", "layer3", "layer4"]
    assert resnet18.out_channels == [128, 256, 512]
    assert resnet18.strides == [8, 16, 32]
    outputs = resnet18(torch.randn(2, 3, 64, 96))
    assert list(outputs) == ["layer2", "layer3", "layer4"]
    assert [tuple(t.shape) for t in outputs.values()] == [(2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]
    odd = resnet18(torch.randn(1, 3, 65, 33))
    assert [tuple(t.shape[-2:]) for t in odd.values()] == [(9, 5), (5, 3), (3, 2)]


def test_resnet50_channels_and_unbuilt_stages():
    backbone = ResNetBackbone("resnet50", out_features=("layer1", "layer3"), freeze_at=0)
    assert backbone.out_channels == [256, 1024] and backbone.strides == [4, 16]
    assert not hasattr(backbone, "layer4") and not hasattr(backbone, "fc")
    assert all(p.requires_grad for p in backbone.parameters())


def test_resnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="resnet7"):
        ResNetBackbone("resnet7")
    with pytest.raises(ValueError, match="layer5"):
        ResNetBackbone("resnet18", out_features=("layer5",))
    with pytest.raises(ValueError, match="increasing"):
        ResNetBackbone("resnet18", out_features=("layer4", "layer2"))
    with pytest.raises(ValueError, match="freeze_at"):
        ResNetBackbone("resnet18", freeze_at=6)


def test_freeze_at_semantics(resnet18):
    assert resnet18.frozen_modules == ["conv1", "bn1", "layer1"]
    for name, param in resnet18.named_parameters():
        assert param.requires_grad == name.startswith(("layer2", "layer3", "layer4")), name
    stem_only = ResNetBackbone("resnet18", freeze_at=1)
    assert stem_only.frozen_modules == ["conv1", "bn1"]
    assert all(p.requires_grad for p in stem_only.layer1.parameters())
    assert not stem_only.conv1.weight.requires_grad


def test_frozen_batch_norm_uses_stored_statistics(resnet18):
    norms = [m for m in resnet18.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in resnet18.modules())
    assert all(m.eps == 1e-5 for m in norms)
    with torch.no_grad():
        for norm in norms:
            norm.running_mean.uniform_(-0.1, 0.1)
            norm.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    images = torch.randn(2, 3, 64, 64)
    resnet18.train()
    train_out = resnet18(images)["layer4"]
    resnet18.eval()
    eval_out = resnet18(images)["layer4"]
    torch.testing.assert_close(train_out, eval_out)
    assert all(torch.equal(before[k], v) for k, v in resnet18.state_dict().items())
    x = torch.randn(1, 64, 3, 3)
    norm = resnet18.bn1
    expected = (x - norm.running_mean.view(1, -1, 1, 1)) / torch.sqrt(norm.running_var.view(1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(norm(x), expected * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1))


def test_trainable_batch_norm_keeps_frozen_stages_in_eval():
    backbone = ResNetBackbone("resnet18", out_features=("layer2",), freeze_at=2, norm="BN").train()
    assert not backbone.bn1.training and not backbone.layer1[0].bn1.training
    assert backbone.layer2[0].bn1.training
    stem_mean = backbone.layer1[0].bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32))
    assert torch.equal(backbone.layer1[0].bn1.running_mean, stem_mean)
    assert not torch.equal(backbone.layer2[0].bn1.running_mean, torch.zeros(128))


def test_loading_torchvision_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetBackbone("resnet18", weights=str(path))
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(tensor, reference.state_dict()[name], msg=name)
    wrapped = tmp_path / "wrapped.pth"
    up_to_layer2 = {k: v for k, v in reference.state_dict().items() if not k.startswith(("layer3", "layer4"))}
    torch.save({"model": up_to_layer2}, wrapped)
    only_layer2 = ResNetBackbone("resnet18", out_features=("layer2",), weights=str(wrapped))
    torch.testing.assert_close(only_layer2.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)


def test_loading_weights_errors(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ResNetBackbone("resnet18", weights=str(missing))
    stem_and_layer1 = ResNetBackbone("resnet18", out_features=("layer1",))
    state = stem_and_layer1.state_dict()
    del state["layer1.0.conv1.weight"]
    incomplete = tmp_path / "incomplete.pth"
    torch.save(state, incomplete)
    with pytest.raises(KeyError, match=r"layer1\.0\.conv1\.weight"):
        ResNetBackbone("resnet18", out_features=("layer1",), weights=str(incomplete))


def _mapper_param_count(in_channels, out_channels, num_outs):
    """Official ChannelMapper: bias-free convs, GroupNorm affine (2 * out) per level, 3x3 extra levels."""
    count = sum(c * out_channels + 2 * out_channels for c in in_channels)
    extra_in = [in_channels[-1]] + [out_channels] * (num_outs - len(in_channels) - 1)
    count += sum(c * out_channels * 9 + 2 * out_channels for c in extra_in[: num_outs - len(in_channels)])
    return count


@pytest.mark.parametrize(
    "in_channels, num_outs, expected",
    [([128, 256, 512], 4, 1411072), ([512, 1024, 2048], 4, 5638144), ([256, 512, 1024, 2048], 5, 5704192)],
)
def test_channel_mapper_param_count(in_channels, num_outs, expected):
    mapper = ChannelMapper(in_channels, out_channels=256, num_outs=num_outs)
    assert _mapper_param_count(in_channels, 256, num_outs) == expected
    assert sum(p.numel() for p in mapper.parameters()) == expected
    assert all(conv[0].bias is None and isinstance(conv[1], nn.GroupNorm) for conv in mapper.convs)
    assert all(conv[1].num_groups == 32 for conv in mapper.convs)


def test_channel_mapper_shapes_and_extra_level_input(resnet18):
    features = resnet18(torch.randn(2, 3, 64, 96))
    mapper = ChannelMapper(resnet18.out_channels, out_channels=64, num_outs=5, num_groups=8)
    outputs = mapper(features)
    assert [tuple(t.shape) for t in outputs] == [
        (2, 64, 8, 12),
        (2, 64, 4, 6),
        (2, 64, 2, 3),
        (2, 64, 1, 2),
        (2, 64, 1, 1),
    ]
    raw_last = features["layer4"]
    torch.testing.assert_close(outputs[3], mapper.convs[3](raw_last))
    torch.testing.assert_close(outputs[4], mapper.convs[4](outputs[3]))
    assert mapper.convs[3][0].stride == (2, 2) and mapper.convs[3][0].kernel_size == (3, 3)
    torch.testing.assert_close(mapper(list(features.values()))[0], outputs[0])
    with pytest.raises(ValueError, match="num_outs"):
        ChannelMapper([8, 16], out_channels=32, num_outs=1)
    with pytest.raises(ValueError, match="3 input levels"):
        mapper(list(features.values())[:2])


@pytest.mark.parametrize("model", ["salience_detr_tiny", "relation_detr_tiny"])
def test_official_backbone_and_neck_keys_load_strictly(model, resnet18):
    checkpoint = os.path.join(fixture_dir(model), "official_checkpoint.pth")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    backbone = resnet18
    neck = ChannelMapper(backbone.out_channels, out_channels=256, num_outs=4)
    for prefix, module in (("backbone.", backbone), ("neck.", neck)):
        part = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
    images = torch.randn(1, 3, 64, 64)
    assert [tuple(t.shape) for t in neck(backbone(images))][-1] == (1, 256, 1, 1)


class _FakeFeatures(nn.Module):
    """Stands in for a timm ``features_only`` model with four stages of strides 4..32."""

    def __init__(self, out_indices, channels_last):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, 4)
        self.stages_0 = nn.Conv2d(4, 4, 1)
        self.stages_1 = nn.Conv2d(4, 8, 2, 2)
        self.stages_2 = nn.Conv2d(8, 16, 2, 2)
        self.stages_3 = nn.Conv2d(16, 32, 2, 2)
        self.out_indices = out_indices
        channels, reductions = [4, 8, 16, 32], [4, 8, 16, 32]
        self.feature_info = types.SimpleNamespace(
            channels=lambda: [channels[i] for i in out_indices], reduction=lambda: [reductions[i] for i in out_indices]
        )
        if channels_last:
            self.output_fmt = "NHWC"

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for index in range(4):
            x = getattr(self, f"stages_{index}")(x)
            if index in self.out_indices:
                outputs.append(x.permute(0, 2, 3, 1) if hasattr(self, "output_fmt") else x)
        return outputs


def _fake_timm(channels_last):
    def create_model(name, pretrained, features_only, out_indices, **kwargs):
        assert features_only and not pretrained and name == "fake_net"
        return _FakeFeatures(out_indices, channels_last)

    return types.SimpleNamespace(create_model=create_model)


def test_timm_backbone_without_timm_fails_only_on_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="timm"):
        TimmBackbone("swin_large_patch4_window7_224")


@pytest.mark.parametrize("channels_last", [False, True])
def test_timm_backbone_outputs_channels_first(monkeypatch, channels_last):
    monkeypatch.setitem(sys.modules, "timm", _fake_timm(channels_last))
    backbone = TimmBackbone("fake_net", out_indices=(1, 2, 3), frozen_prefixes=("stem", "stages_0"), output_norms=True)
    assert backbone.out_features == ["stage1", "stage2", "stage3"]
    assert backbone.out_channels == [8, 16, 32] and backbone.strides == [8, 16, 32]
    outputs = backbone(torch.randn(2, 3, 64, 32))
    assert [tuple(t.shape) for t in outputs.values()] == [(2, 8, 8, 4), (2, 16, 4, 2), (2, 32, 2, 1)]
    normalized = outputs["stage1"].permute(0, 2, 3, 1)
    torch.testing.assert_close(normalized.mean(-1), torch.zeros(2, 8, 4), atol=1e-5, rtol=0)
    assert not backbone.model.stem.weight.requires_grad and backbone.model.stages_1.weight.requires_grad
    assert not backbone.train().model.stages_0.training
    with pytest.raises(ValueError, match="match no module"):
        TimmBackbone("fake_net", frozen_prefixes=("blocks",))


@pytest.mark.parametrize("name, freeze_at", [("resnet18", 0), ("resnet50", 2)])
def test_folded_frozen_norms_equal_module_forward(name, freeze_at):
    """The default forward applies each frozen batch norm through its convolution's weight and bias; in float64 it
    equals torchvision's module forwards (``fold_frozen_norms=False``) in values and in the gradients of the input
    and of every trainable parameter, and the state dict is the same."""
    torch.manual_seed(0)
    backbone = ResNetBackbone(name, out_features=("layer1", "layer2", "layer4"), freeze_at=freeze_at).double()
    for module in backbone.modules():
        if isinstance(module, FrozenBatchNorm2d):  # non-trivial statistics, else the fold is an identity
            for buffer, low, high in (("weight", 0.5, 1.5), ("bias", -0.5, 0.5), ("running_mean", -0.5, 0.5)):
                getattr(module, buffer).uniform_(low, high)
            module.running_var.uniform_(0.5, 2.0)
    assert backbone.fold_frozen_norms
    keys = list(backbone.state_dict())
    backbone.train()
    images = torch.randn(2, 3, 70, 45, dtype=torch.float64)

    def run(fold):
        backbone.fold_frozen_norms = fold
        backbone.zero_grad()
        x = images.clone().requires_grad_(True)
        outputs = backbone(x)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs.values()).backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad}
        return [o.detach() for o in outputs.values()], x.grad, grads

    folded, reference = run(True), run(False)
    for a, b in zip(folded[0], reference[0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(folded[1], reference[1], rtol=1e-11, atol=1e-12)
    assert folded[2].keys() == reference[2].keys() and len(folded[2]) > 0
    for key in folded[2]:
        a, b = folded[2][key], reference[2][key]
        assert (a - b).abs().max() <= 1e-10 * b.abs().max(), (key, (a - b).abs().max(), b.abs().max())
    assert list(backbone.state_dict()) == keys
