"""Salience DETR, ResNet-50, 4 feature levels (the official ``salience_detr_resnet50_800_1333`` model).

The shared two-stage DETR (``configs/common/models/two_stage_detr_r50.py``) with what Salience DETR adds, each a
module of its own (the ablation switches of the paper are their arguments):

* the encoder: salience prediction with top-down modulation, hierarchical filtering (level- and layer-wise
  ratios; each encoder layer updates only its selected tokens, ranked for its self-attention among the top 300)
  and the background embedding (``SalienceEncoder``);
* redundancy removal in the query selection, cross-level token fusion of the memory;
* the scale-independent salience supervision (``extra_losses.salience``, weight 2) and the IoU-aware varifocal
  class loss.
"""

from core.lazy import LazyCall as L
from projects.salience_detr.modeling import (
    BackgroundEmbedding,
    HierarchicalTokenFilter,
    RedundancyRemovalSelector,
    RepVGGPluXNetwork,
    SalienceEncoder,
    SalienceEncoderLayer,
    SalienceLoss,
    SelectedTokenAttention,
    TokenScoreSupervision,
    TopDownSalience,
)

from .....configs.common.models.layers import encoder_layer
from .....configs.common.models.two_stage_detr_r50 import model

transformer = model.transformer
transformer.encoder = L(SalienceEncoder)(
    layer=L(SalienceEncoderLayer)(
        token_attention=L(SelectedTokenAttention)(embed_dim="${....embed_dim}", num_heads=8, topk=300, dropout=0.0),
        deformable=encoder_layer("${.....embed_dim}", "${.....num_feature_levels}"),
    ),
    num_layers=6,
    salience=L(TopDownSalience)(embed_dim="${...embed_dim}", num_levels="${...num_feature_levels}", top_down=True),
    token_filter=L(HierarchicalTokenFilter)(
        level_filter_ratio=(0.4, 0.8, 1.0, 1.0), layer_filter_ratio=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2)
    ),
    background_embedding=L(BackgroundEmbedding)(num_embeddings=200, embed_dim="${...embed_dim}", relative=False),
)
transformer.query_selector = L(RedundancyRemovalSelector)(
    num_queries="${..num_queries}", candidate_factor=4, iou_threshold=0.3, level_wise=True
)
transformer.memory_fusion = L(RepVGGPluXNetwork)(
    channels="${..embed_dim}", num_levels="${..num_feature_levels}", groups=4, norm="BatchNorm2d", activation="SiLU"
)
del transformer

model.criterion.class_loss = "varifocal_iou_aware"
model.criterion.weight_dict.extra_weights = {"loss_salience": 2}
model.extra_losses = L(dict)(
    salience=L(TokenScoreSupervision)(loss=L(SalienceLoss)(alpha=0.25, gamma=2.0, noise_scale=0.0)),
)
