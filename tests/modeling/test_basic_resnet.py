"""BasicResNet: stage shapes and strides, the ResNetBackbone output contract, zero-initialised residual branches."""

import pytest
import torch

from modeling.backbones import BasicResNet


@pytest.mark.parametrize("height,width", [(64, 96), (75, 101)])
def test_stage_shapes_strides_and_channels(height, width):
    torch.manual_seed(0)
    net = BasicResNet(width=8, depths=(1, 2, 1, 1), out_features=("layer2", "layer3", "layer4"))
    assert net.out_channels == [16, 32, 64] and net.strides == [8, 16, 32]
    outputs = net(torch.randn(2, 3, height, width))
    assert list(outputs) == ["layer2", "layer3", "layer4"]
    for (name, feature), channels, stride in zip(outputs.items(), net.out_channels, net.strides):
        assert feature.shape == (2, channels, -(-height // stride), -(-width // stride)), name
    assert len(net.layer2) == 2


def test_unused_stages_are_not_built_and_blocks_start_as_identity():
    net = BasicResNet(width=4, out_features=("layer1", "layer2"))
    assert not hasattr(net, "layer3") and net.strides == [4, 8]
    for block in [*net.layer1, *net.layer2]:
        assert torch.count_nonzero(block.bn2.weight) == 0  # residual branch outputs zero at initialisation
    net.eval()
    x = torch.randn(1, 4, 16, 16).relu()
    assert torch.equal(net.layer1(x), x)  # first block of layer1 has no downsample: exactly the identity


def test_trains_its_norms_and_rejects_bad_arguments():
    net = BasicResNet(width=4)
    assert isinstance(net.bn1, torch.nn.BatchNorm2d) and all(p.requires_grad for p in net.parameters())
    sum(o.sum() for o in net(torch.randn(2, 3, 32, 32)).values()).backward()
    assert net.conv1[0].weight.grad is not None
    with pytest.raises(ValueError, match="norm"):
        BasicResNet(norm="GN")
    with pytest.raises(ValueError, match="depths"):
        BasicResNet(depths=(1, 1, 1))
    with pytest.raises(ValueError, match="out_features"):
        BasicResNet(out_features=("layer3", "layer2"))
