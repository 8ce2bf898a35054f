"""LP-DETR's command lines (its pictures, benchmarks); like ``scripts/``, each puts the repository root on sys.path."""
