"""Necks between the backbone and the transformer."""

from .channel_mapper import ChannelMapper

__all__ = ["ChannelMapper"]
