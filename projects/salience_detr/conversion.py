"""Conversion rules of official Salience DETR checkpoints (xiuqhou/Salience-DETR) into this project's models.

One table covers every official backbone: ResNet-50, Swin-L, ConvNeXt-L and FocalNet-L (configs
``salience_detr_{r50,swin_l,convnext_l,focalnet_l}_4scale_12ep.py``); their key layouts do not overlap.
``scripts/convert_checkpoint.py --model salience_detr`` applies it.
"""

from modeling.conversion import BACKBONE_AND_TWO_STAGE_RULES, DECODER_RULES, ConversionRules, Rule, layer_rules

_CSP_RENAMES = {"conv1": "main", "conv2": "shortcut"}
_REPVGG_RENAMES = {
    "conv1": "conv3x3",
    "conv2": "conv1x1",
    "se_module.conv_mask": "gate.attention_pool",
    "se_module.se_module": "gate.excite",
}

_RULES: list[Rule] = [
    *BACKBONE_AND_TWO_STAGE_RULES,
    # salience prediction and hierarchical filtering (modules of the filtered encoder here)
    Rule(r"^transformer\.alpha$", "transformer.encoder.salience.alpha"),
    Rule(r"^transformer\.enc_mask_predictor\.layer1\.0\.", "transformer.encoder.salience.predictor.norm."),
    Rule(r"^transformer\.enc_mask_predictor\.layer1\.1\.", "transformer.encoder.salience.predictor.proj."),
    Rule(r"^transformer\.enc_mask_predictor\.layer2\.", "transformer.encoder.salience.predictor.mlp."),
    Rule(r"^transformer\.(level|layer)_filter_ratio$", r"transformer.encoder.token_filter.\1_filter_ratio"),
    # filtered encoder layers
    *layer_rules(
        "transformer.encoder.layers",
        {
            "pre_attention": "token_attention.attn",
            "pre_norm": "token_attention.norm",
            "self_attn": "deformable.self_attn",
            "norm1": "deformable.self_attn_norm",
            "linear1": "deformable.ffn.linear1",
            "linear2": "deformable.ffn.linear2",
            "norm2": "deformable.ffn.norm",
        },
    ),
    # cross-level token fusion
    Rule(r"^transformer\.neck\.lateral_convs\.", "transformer.memory_fusion.lateral_convs."),
    Rule(r"^transformer\.neck\.layer_blocks\.", "transformer.memory_fusion.top_down_blocks."),
    Rule(r"^transformer\.neck\.downsample_blocks\.", "transformer.memory_fusion.downsample_convs."),
    Rule(r"^transformer\.neck\.pan_blocks\.", "transformer.memory_fusion.bottom_up_blocks."),
    *layer_rules("transformer.memory_fusion.top_down_blocks", _CSP_RENAMES),
    *layer_rules("transformer.memory_fusion.bottom_up_blocks", _CSP_RENAMES),
    Rule(r"^(transformer\.memory_fusion\.\w+_blocks\.\d+\.)bottlenecks\.", r"\g<1>blocks."),
    *layer_rules(r"transformer.memory_fusion.\w+_blocks.\d+.blocks", _REPVGG_RENAMES, escape_prefix=False),
    *DECODER_RULES,
]

CONVERSIONS = {
    "salience_detr": ConversionRules(
        rules=_RULES,
        identity_prefixes=(
            "backbone.",
            "neck.convs.",
            "position_embedding.",
            "transformer.level_embeds",
            "transformer.tgt_embed.",
            "transformer.encoder.background_embedding.",
            "transformer.decoder.layers.",
            "transformer.decoder.ref_point_head.",
            "transformer.decoder.norm.",
        ),
        # the official encoder registers the two-stage class head a second time
        aliases=[Rule(r"^transformer\.encoder\.enhance_mcsp\.", "transformer.encoder_class_head.")],
    ),
}
