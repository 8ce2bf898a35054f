"""The official DETR recipe of Salience DETR and Relation DETR on COCO 2017, 12 epochs.

* AdamW, lr 1e-4 for the official total batch of 10 images; ``train.lr_reference_batch_size = 10`` makes
  tools/train_net.py scale the lr linearly to the actual total batch (e.g. 16 images -> 1.6e-4).
* Weight decay 1e-4, none on norm layers and biases; lr x0.1 for the backbone, the sampling offsets and reference
  points of deformable attention.
* Linear warmup over 1000 iterations; lr x0.1 after epoch 10 of 12; gradient clipping at norm 0.1.
* DETR augmentation (flip, multi-scale resize 480-800 up to 1333, random-crop variant); test at 800 / 1333.
"""

from core.lazy import LazyCall as L
from engine.solver import get_default_optimizer_params

from ..coco_schedule import multistep_schedule
from ..data.coco_detr import dataloader
from ..optim import AdamW as optimizer
from ..train import train

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params = L(get_default_optimizer_params)(
    base_lr="${..lr}",
    weight_decay_norm=0.0,
    weight_decay_bias=0.0,
    lr_factors={"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1},
)

dataloader.train.total_batch_size = 10

train.epochs = 12
train.lr_reference_batch_size = 10
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.clip_grad.params.norm_type = 2
train.eval_period = 5000
train.checkpointer.period = 5000

lr_multiplier = multistep_schedule(12, 10, warmup_iters=1000)
