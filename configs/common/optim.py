import torch

from core.lazy import LazyCall as L
from engine.solver import get_default_optimizer_params

# `params.model` is filled in by tools/train_net.py.
AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
