"""Salience DETR with a half-width ResNet-18 trained from scratch on the embedded synthetic dataset, on a CPU.

The official recipe (``salience_detr_r50_4scale_12ep.py``) scaled down for a 2-core CPU and no pretrained
weights (no network access):

* backbone: :class:`~modeling.backbones.BasicResNet`, ResNet-18's layout (2-2-2-2 basic blocks) at half width
  (32-64-128-256 channels) with a 3x3 stem and trainable batch norm, randomly initialised and trained at the
  full lr. Measured here, a whole iteration takes 1.2 s instead of 2.1 s with a frozen-BN ResNet-18 from
  scratch, and it learns faster per iteration (AP50 26.9 after 350 iterations vs 18.8 after 315);
* 128-channel tokens, 2 encoder and 2 decoder layers, 100 queries, 50 denoising queries, one RepVGG block
  per token-fusion layer (the official three cost more than the whole encoder on a CPU);
* images: train short edges 192-256 (max 384) without the crop branch, test short edge 256 (max 384);
* AdamW lr 1e-3 for a total batch of 4 (scaled linearly for other batches), 50 warmup iterations, 420
  iterations with the lr x0.1 after 5/6 of them, gradient clipping at 0.1, evaluation every 140.

Measured with ``make demo`` on 2 cores (Xeon 2.5 GHz, no GPU): see the README (AP vs iteration and time).
"""

from core.lazy import LazyCall as L
from data.synthetic import THING_CLASSES
from modeling.backbones import BasicResNet

from ....configs.common.coco_schedule import multistep_schedule
from ....configs.common.data.synthetic import dataloader
from .models.salience_detr_r50 import model
from .salience_detr_r50_4scale_12ep import optimizer, train

model.num_classes = len(THING_CLASSES)
model.backbone = L(BasicResNet)(width=32, depths=(2, 2, 2, 2), out_features=("layer2", "layer3", "layer4"), norm="BN")
model.neck.in_channels = (64, 128, 256)  # BasicResNet: width * (2, 4, 8)
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
transformer.memory_fusion.num_blocks = 1
del transformer

optimizer.lr = 1e-3
optimizer.params.lr_factors = {"sampling_offsets": 0.1, "reference_points": 0.1}

# Smaller images than the shared synthetic data config, and no crop branch: the time per iteration on a CPU
# grows with the padded batch area (native-size images cost 1.4x per iteration for a smaller gain per iteration).
dataloader.train.mapper.augmentation[1].short_edge_length = [192, 224, 256]
dataloader.train.mapper.augmentation[1].max_size = 384
dataloader.train.mapper.augmentation_with_crop = None
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.mapper.augmentation[0].short_edge_length = 256
dataloader.test.mapper.augmentation[0].max_size = 384
dataloader.test.num_workers = 1

train.epochs = None
train.max_iter = 420
train.lr_reference_batch_size = 4
train.eval_period = 140
train.log_period = 20
train.checkpointer.period = 140
train.output_dir = "./output/salience_detr_r18_synthetic"
train.device = "auto"

lr_multiplier = multistep_schedule(12, 10, warmup_iters=50)
