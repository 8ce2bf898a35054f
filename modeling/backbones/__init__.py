"""Backbones returning a dict of multi-stage feature maps, with ``out_features``/``out_channels``/``strides``.

The large backbones of the official Salience DETR model zoo are :class:`SwinBackbone` (Swin-L),
:class:`ConvNeXtBackbone` (ConvNeXt-L) and :class:`FocalNetBackbone` (FocalNet-L): they compute exactly what the
official backbones compute and keep their parameter names. :class:`TimmBackbone` wraps any timm model (timm is
optional) for other experiments. :class:`BasicResNet` is a narrow ResNet for training from scratch on small data.
"""

from .basic_resnet import BasicResNet
from .focalnet import FocalNetBackbone
from .resnet import ResNetBackbone, load_state_dict_file
from .timm_backbone import TimmBackbone
from .torchvision_backbones import ConvNeXtBackbone, SwinBackbone

__all__ = [
    "BasicResNet",
    "ConvNeXtBackbone",
    "FocalNetBackbone",
    "ResNetBackbone",
    "SwinBackbone",
    "TimmBackbone",
    "load_state_dict_file",
]
