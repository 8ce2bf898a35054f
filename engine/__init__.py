"""detectron2-style engine: lazy configs, launching, training loop, hooks, checkpointing."""
