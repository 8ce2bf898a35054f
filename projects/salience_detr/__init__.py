"""Salience DETR (CVPR 2024): hierarchical salience filtering refinement for DETR-like detectors."""
