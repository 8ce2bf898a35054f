"""Salience DETR's command lines (its pictures); like ``scripts/``, each puts the repository root on sys.path."""
