"""Relation DETR, ResNet-18 from scratch, on the embedded synthetic dataset: trains on a CPU.

The Relation DETR model (``models/relation_detr_r50.py``) at the size, and with the data, schedule and optimizer, of
``projects/salience_detr/configs/salience_detr_r18_synthetic.py``, from which every shared value is read (that
config's tuning carries over): the same randomly initialised ``BasicResNet`` backbone, 128-channel tokens, 2 encoder
and 2 decoder layers, 100 queries, the same denoising queries, images, batch, lr, iterations and evaluation period.
The hybrid (one-to-many) branch is sized down to 100 proposals, like the one-to-one queries. With 100 queries the
relation biases are small: no chunking or checkpointing.
"""

from ...salience_detr.configs import salience_detr_r18_synthetic as _salience
from .models.relation_detr_r50 import model

dataloader = _salience.dataloader
lr_multiplier = _salience.lr_multiplier
optimizer = _salience.optimizer
train = _salience.train

_small = _salience.model
model.num_classes = _small.num_classes
model.backbone = _small.backbone
model.neck.in_channels = _small.neck.in_channels
model.position_embedding.num_pos_feats = _small.position_embedding.num_pos_feats
model.num_detections = _small.num_detections
model.denoising.denoising_nums = _small.denoising.denoising_nums

transformer = model.transformer
transformer.embed_dim = _small.transformer.embed_dim
transformer.num_queries = _small.transformer.num_queries
transformer.hybrid_num_proposals = _small.transformer.num_queries
transformer.encoder.num_layers = _small.transformer.encoder.num_layers
transformer.encoder.layer.update(embed_dim=transformer.embed_dim, d_ffn=_small.transformer.encoder.layer.d_ffn)
transformer.decoder.num_layers = _small.transformer.decoder.num_layers
transformer.decoder.layer.update(embed_dim=transformer.embed_dim, d_ffn=_small.transformer.decoder.layer.d_ffn)
transformer.decoder.relation.chunk_size = None
transformer.decoder.relation.checkpoint = False
del transformer

train.output_dir = "./output/relation_detr_r18_synthetic"
