"""Callables used as ``_target_`` by the test configs; importable as ``tests.core.lazy_configs.targets``."""

import collections

# How many times each config file was executed (incremented by the config files themselves).
LOAD_COUNTS = collections.Counter()


class Recorder:
    """Records the keyword arguments it was called with."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __eq__(self, other):
        return type(other) is Recorder and other.kwargs == self.kwargs

    def __repr__(self):
        return f"Recorder({self.kwargs})"


def param_groups(model, base_lr, weight_decay):
    """One optimizer parameter group holding all parameters of ``model``."""
    return [{"params": list(model.parameters()), "lr": base_lr, "weight_decay": weight_decay}]


def fail(**kwargs):
    """Always raises."""
    raise ValueError(f"bad arguments {sorted(kwargs)}")


class Scale:
    """A callable object: ``Scale(factor)(value) == factor * value``."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, value):
        return self.factor * value
