"""LP-DETR (layer-wise progressive relations) and Relation DETR (ECCV 2024), which it builds on."""
