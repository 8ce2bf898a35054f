"""Salience DETR's encoder with LP-DETR's decoder, ResNet-50, 4 scales: a model neither paper has, as configuration.

Salience DETR's model (``projects/salience_detr/configs/models/salience_detr_r50.py``: salience-filtered encoder,
background embedding, token fusion, redundancy removal, salience supervision) whose decoder, hybrid branch and
hybrid loss are LP-DETR's (``projects/lp_detr/configs/models/lp_detr_r50.py``: the layer-wise progressive relation
bias with conditional query scaling, 1500 one-to-many queries matched to the ground truth repeated 6 times). No
modeling code of its own: both papers' pieces are modules of the shared two-stage DETR.
"""

from ....lp_detr.configs.models.lp_detr_r50 import model as _lp
from ....salience_detr.configs.models.salience_detr_r50 import model

model.transformer.decoder = _lp.transformer.decoder
model.transformer.branches = _lp.transformer.branches
model.extra_losses.hybrid = _lp.extra_losses.hybrid
model.criterion.weight_dict.hybrid_suffix = _lp.criterion.weight_dict.hybrid_suffix
