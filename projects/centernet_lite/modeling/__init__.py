"""Modeling of the CenterNetLite project."""

from .centernet import CenterNetLite, TinyFPNBackbone

__all__ = ["CenterNetLite", "TinyFPNBackbone"]
