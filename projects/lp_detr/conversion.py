"""Conversion rules of official Relation DETR checkpoints (xiuqhou/Relation-DETR) into the models of this project.

Every backbone of the official model zoo (ResNet, Swin-L, ConvNeXt-L, FocalNet-L; its backbones are Salience DETR's
classes: ResNet and ConvNeXt-L keep their names, Swin-L and FocalNet-L are ``nn.Sequential(extractor,
post-process)``, the post-process holding FocalNet's per-stage LayerNorms). ``scripts/convert_checkpoint.py --model
relation_detr`` applies it; the result loads into ``relation_detr_*`` configs (and LP-DETR's, but for Lambda and the
GIoU projection, which the official model does not have).
"""

from modeling.conversion import BACKBONE_AND_TWO_STAGE_RULES, DECODER_RULES, ConversionRules, Rule, layer_rules

CONVERSIONS = {
    "relation_detr": ConversionRules(
        rules=[
            *BACKBONE_AND_TWO_STAGE_RULES,
            Rule(r"^transformer\.hybrid_tgt_embed\.", "transformer.branches.hybrid.tgt_embed."),
            Rule(r"^transformer\.hybrid_class_head\.", "transformer.branches.hybrid.class_head."),
            Rule(r"^transformer\.hybrid_bbox_head\.", "transformer.branches.hybrid.box_head."),
            Rule(r"^transformer\.encoder\.memory_fusion\.", "transformer.encoder.layer_fusion."),
            *layer_rules(
                "transformer.encoder.layers",
                {"norm1": "self_attn_norm", "linear1": "ffn.linear1", "linear2": "ffn.linear2", "norm2": "ffn.norm"},
            ),
            *DECODER_RULES,
            Rule(
                r"^transformer\.decoder\.position_relation_embedding\.pos_proj\.0\.",
                "transformer.decoder.relation.proj.",
            ),
        ],
        identity_prefixes=(
            "backbone.",
            "neck.convs.",
            "transformer.level_embeds",
            "transformer.tgt_embed.",
            "transformer.encoder.layers.",
            "transformer.decoder.layers.",
            "transformer.decoder.ref_point_head.",
            "transformer.decoder.query_scale.",
            "transformer.decoder.norm.",
        ),
    ),
}
