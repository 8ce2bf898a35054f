"""Backbones returning a dict of multi-stage feature maps, with ``out_features``/``out_channels``/``strides``."""

from .resnet import ResNetBackbone, load_state_dict_file
from .timm_backbone import TimmBackbone

__all__ = ["ResNetBackbone", "TimmBackbone", "load_state_dict_file"]
