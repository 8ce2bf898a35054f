"""Modeling pieces shared by every detector: backbones, necks, DETR layers, matcher, criterion, meta-architectures."""
