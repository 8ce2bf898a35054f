"""A narrow ResNet of basic blocks with a configurable width and depth, for training from scratch on small data.

The torchvision ResNets fix the stage widths at 64-128-256-512 (ResNet-18/34). Without pretrained weights, on a
CPU, most of that compute is wasted on a small dataset: ``BasicResNet(width=32, depths=(1, 1, 1, 1))`` costs
about a sixth of ResNet-18's FLOPs. The layout (``conv1``/``bn1``/``layer1``..``layer4``, torchvision's
``BasicBlock``) and the output contract (``out_features``/``out_channels``/``strides``) are those of
:class:`~modeling.backbones.ResNetBackbone`, so configs swap one for the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from .resnet import NORMS, STAGE_STRIDES, STAGES, run_resnet_stages

__all__ = ["BasicResNet"]


class BasicResNet(nn.Module):
    """Stem (3x3 stride 2, 3x3, max-pool: stride 4) and four stages of basic blocks, widths ``width * 2**i``.

    Args:
        width: channels of the stem and of ``layer1``; ``layer{i+1}`` has ``width * 2**i``.
        depths: basic blocks per stage (the first block of ``layer2``..``layer4`` halves the resolution).
        out_features: stages to return, among ``"layer1"`` .. ``"layer4"``, finest first.
        norm: ``"BN"`` (trainable, the default: the network starts from random weights) or ``"FrozenBN"``.

    Attributes:
        out_features, out_channels, strides: as in :class:`~modeling.backbones.ResNetBackbone`.
    """

    def __init__(
        self,
        width: int = 32,
        depths: Sequence[int] = (1, 1, 1, 1),
        out_features: Sequence[str] = ("layer2", "layer3", "layer4"),
        norm: str = "BN",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm '{norm}', expected one of {sorted(NORMS)}")
        if width < 1 or len(depths) != 4 or min(depths) < 1:
            raise ValueError(f"need width >= 1 and four depths >= 1, got width={width}, depths={tuple(depths)}")
        out_features = list(out_features)
        if not out_features or not all(f in STAGES for f in out_features) or out_features != sorted(set(out_features)):
            raise ValueError(f"out_features must be distinct stages of {STAGES}, increasing, got {out_features}")
        norm_layer = NORMS[norm]
        # A 3x3 stride-2 stem keeps thin structures (1-2 px scratches) that a 7x7 stride-2 conv on 3 input
        # channels would average away at this width.
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            norm_layer(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
        )
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        num_stages = max(STAGES.index(f) for f in out_features) + 1
        in_channels = width
        for index, stage in enumerate(STAGES[:num_stages]):
            channels, stride = width * 2**index, 1 if index == 0 else 2
            blocks = []
            for block_index in range(depths[index]):
                downsample = None
                if block_index == 0 and (stride != 1 or in_channels != channels):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), norm_layer(channels)
                    )
                blocks.append(
                    BasicBlock(
                        in_channels,
                        channels,
                        stride=stride if block_index == 0 else 1,
                        downsample=downsample,
                        norm_layer=norm_layer,
                    )
                )
                in_channels = channels
            self.add_module(stage, nn.Sequential(*blocks))
        self.stage_names = list(STAGES[:num_stages])
        self.out_features = out_features
        self.out_channels = [width * 2 ** STAGES.index(f) for f in out_features]
        self.strides = [STAGE_STRIDES[f] for f in out_features]
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last norm of each residual branch: every block starts as the identity (Goyal et al., 2017).
        for module in self.modules():
            if isinstance(module, BasicBlock) and isinstance(module.bn2, nn.BatchNorm2d):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Runs the stem and the stages.

        Args:
            images: ``[B, 3, H, W]`` normalised images.

        Returns:
            dict, in ``out_features`` order, of ``[B, out_channels[i], ceil(H / strides[i]), ceil(W / strides[i])]``
            feature maps.
        """
        return run_resnet_stages(self, images)
