from core.lazy import LazyCall as L
from tests.core.lazy_configs.targets import Recorder

lr_multiplier = L(Recorder)(milestones=[8, 9], max_iter=10)
