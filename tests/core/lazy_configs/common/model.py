from core.lazy import LazyCall as L
from tests.core.lazy_configs.targets import Recorder

model = L(Recorder)(
    num_classes=3,
    hidden_dim=16,
    head=L(Recorder)(num_classes="${..num_classes}", names=["cat", "dog"]),
    size=(800, 1333),
    stages=[L(Recorder)(depth=2), L(Recorder)(depth=4)],
)
