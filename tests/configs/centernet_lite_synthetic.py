"""The engine's end-to-end test fixture: CenterNetLite (``tests/fixtures/centernet_lite.py``) on the synthetic data."""

from core.lazy import LazyCall as L
from data.synthetic import THING_CLASSES
from tests.fixtures.centernet_lite import CenterNetLite

from ...configs.common.coco_schedule import multistep_schedule
from ...configs.common.data.synthetic import dataloader
from ...configs.common.optim import AdamW as optimizer
from ...configs.common.train import train

model = L(CenterNetLite)(num_classes=len(THING_CLASSES), width=16, feature_channels=32, head_channels=32)

optimizer.lr = 2e-3
optimizer.weight_decay = 1e-4

train.max_iter = 600
train.eval_period = 300
train.log_period = 20
train.checkpointer.period = 300
train.output_dir = "./output/centernet_lite_synthetic"
train.device = "auto"

# Drop the lr x0.1 for the last sixth of training, after a short warmup.
lr_multiplier = multistep_schedule(12, 10, warmup_iters=50)
