"""Salience DETR, ResNet-18 from scratch, on the embedded synthetic dataset: trains on a CPU.

The official recipe (``salience_detr_r50_4scale_12ep.py``) scaled down: 128-channel tokens, 2 encoder and
2 decoder layers, 100 queries, a randomly initialised backbone trained at the full lr (no pretrained weights on
a machine without network access). The lr is for a total batch of 4 and scales linearly with it.

Sized for a 15-minute budget on a 2-core CPU: train short edges 192-256 (max 384) without the crop branch,
test short edge 256 (max 384), lr 4e-4 with 50 warmup iterations, 315 iterations at batch 4 (lr x0.1 after
5/6 of them), evaluation every 105. Measured with the README command on 2 cores (Xeon 2.5 GHz, no GPU):
2.13 s/iter, 11 min 7 s of training plus about 30 s per evaluation, 12 min 52 s in all from start to the
final COCO table; bbox AP50 2.3 / 12.1 / 18.8 (AP 0.5 / 4.4 / 9.3) at iterations 105 / 210 / 315. The curve
is still rising steeply: the model needs a longer schedule than 15 minutes allow on a CPU to reach AP50 50.
"""

from data.synthetic import THING_CLASSES

from ....configs.common.coco_schedule import multistep_schedule
from ....configs.common.data.synthetic import dataloader
from .models.salience_detr_r50 import model
from .salience_detr_r50_4scale_12ep import optimizer, train

model.num_classes = len(THING_CLASSES)
model.backbone.name = "resnet18"
model.backbone.weights = None
model.backbone.freeze_at = 0
model.neck.in_channels = (128, 256, 512)
model.position_embedding.num_pos_feats = 64
model.num_detections = 100
model.denoising.denoising_nums = 50

transformer = model.transformer
transformer.embed_dim = 128
transformer.num_queries = 100
transformer.layer_filter_ratio = (1.0, 0.6)
transformer.encoder.num_layers = 2
transformer.encoder.layer.update(embed_dim=128, d_ffn=512, topk_sa=100)
transformer.encoder.background_embedding.embed_dim = 128
transformer.decoder.num_layers = 2
transformer.decoder.layer.update(embed_dim=128, d_ffn=512)
del transformer

optimizer.lr = 4e-4
optimizer.params.lr_factors = {"sampling_offsets": 0.1, "reference_points": 0.1}

# Smaller images than the shared synthetic data config, and no crop branch: the time per iteration on a CPU
# is dominated by the ResNet-18 convolutions, which scale with the padded batch area.
dataloader.train.mapper.augmentation[1].short_edge_length = [192, 224, 256]
dataloader.train.mapper.augmentation[1].max_size = 384
dataloader.train.mapper.augmentation_with_crop = None
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.mapper.augmentation[0].short_edge_length = 256
dataloader.test.mapper.augmentation[0].max_size = 384
dataloader.test.num_workers = 1

train.epochs = None
train.max_iter = 315
train.lr_reference_batch_size = 4
train.eval_period = 105
train.log_period = 20
train.checkpointer.period = 105
train.output_dir = "./output/salience_detr_r18_synthetic"
train.device = "auto"

lr_multiplier = multistep_schedule(12, 10, warmup_iters=50)
