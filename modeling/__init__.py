"""Modeling pieces shared by every detector of the project: image batching, and later backbones, DETR layers."""
