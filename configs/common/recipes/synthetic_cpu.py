"""The recipe of the synthetic-dataset configs, sized for a CPU: the DETR recipe (``detr_coco_12ep.py``) scaled down.

AdamW lr 1e-3 for a total batch of 4 (scaled linearly for other batches; no lower lr for the backbone, which
trains from scratch), 50 warmup iterations, 1200 iterations (about 13 epochs of the 372 training images that have
objects) with the lr x0.1 after 5/6 of them, gradient clipping at 0.1, evaluation every 300 iterations. Most of the
AP comes after the lr drop (Salience DETR, 900 iterations: AP50 30.4 at iteration 600, 49.6 at 900). Images: train
short edges 192-256 (max 384) without the crop branch, test short edge 256 (max 384): the time per iteration on a
CPU grows with the padded batch area. Measured results are in the README.
"""

from ..coco_schedule import multistep_schedule
from ..data.synthetic import dataloader
from .detr_coco_12ep import optimizer, train

optimizer.lr = 1e-3
optimizer.params.lr_factors = {"sampling_offsets": 0.1, "reference_points": 0.1}

dataloader.train.mapper.augmentation[1].short_edge_length = [192, 224, 256]
dataloader.train.mapper.augmentation[1].max_size = 384
dataloader.train.mapper.augmentation_with_crop = None
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.mapper.augmentation[0].short_edge_length = 256
dataloader.test.mapper.augmentation[0].max_size = 384
dataloader.test.num_workers = 1

train.epochs = None
train.max_iter = 1200
train.lr_reference_batch_size = 4
train.eval_period = 300
train.log_period = 20
train.checkpointer.period = 300
train.device = "auto"

lr_multiplier = multistep_schedule(12, 10, warmup_iters=50)
