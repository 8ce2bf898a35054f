"""Salience DETR, ResNet-18 from scratch, on the embedded synthetic dataset: trains on a CPU.

The official recipe (``salience_detr_r50_4scale_12ep.py``) scaled down: 128-channel tokens, 2 encoder and
2 decoder layers, 100 queries, a randomly initialised backbone trained at the full lr (no pretrained weights on
a machine without network access). The lr is for a total batch of 4 and scales linearly with it.
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

optimizer.lr = 2e-4
optimizer.params.lr_factors = {"sampling_offsets": 0.1, "reference_points": 0.1}

dataloader.train.total_batch_size = 4

train.epochs = None
train.max_iter = 3000
train.lr_reference_batch_size = 4
train.eval_period = 1000
train.log_period = 20
train.checkpointer.period = 1000
train.output_dir = "./output/salience_detr_r18_synthetic"
train.device = "auto"

lr_multiplier = multistep_schedule(12, 10, warmup_iters=100)
