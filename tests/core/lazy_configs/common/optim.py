import torch

from core.lazy import LazyCall as L
from tests.core.lazy_configs.targets import param_groups

optimizer = L(torch.optim.SGD)(
    params=L(param_groups)(model=None, base_lr="${..lr}", weight_decay="${..weight_decay}"),
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
)
