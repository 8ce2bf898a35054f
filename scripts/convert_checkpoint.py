#!/usr/bin/env python
"""Converts an official checkpoint (xiuqhou/Salience-DETR layout) into this project's state-dict layout.

The input is ``{"model": state_dict}`` or a bare state dict; floating-point tensors are converted to float32
(official checkpoints may store fp16). Keys are renamed by an ordered table of regular-expression rules per model
(:data:`RULES`); aliases (one module registered under two names) are checked to be equal and dropped. A key that
no rule accounts for is an error, and so is, when a reference model is given, any key the model does not have or
any model key the checkpoint does not provide.

Example::

    python scripts/convert_checkpoint.py --input salience_detr_r50_800_1333_coco_1x.pth \\
        --output salience_detr_r50_converted.pth --model salience_detr \\
        --config projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py

One rule table (``--model salience_detr``) covers every official backbone: ResNet-50, Swin-L, ConvNeXt-L and
FocalNet-L (configs ``salience_detr_{r50,swin_l,convnext_l,focalnet_l}_4scale_12ep.py``); their key layouts do not
overlap.

``--model relation_detr`` converts official Relation DETR checkpoints (ResNet, Swin-L, ConvNeXt-L and FocalNet-L
backbones) into the models of ``projects/lp_detr``. Adding a model means adding an entry to :data:`RULES` (and
:data:`ALIASES` if needed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

__all__ = ["ALIASES", "RULES", "Rule", "convert_state_dict", "load_official_checkpoint", "main"]


class Rule(NamedTuple):
    """Renames the part of a key matching ``pattern`` to ``replacement`` (``re.sub`` syntax)."""

    pattern: str
    replacement: str


def _layer_rules(prefix: str, renames: Mapping[str, str], escape_prefix: bool = True) -> list[Rule]:
    """Rules renaming the children of ``<prefix>.<i>.`` (``renames``: official child -> project child).

    ``prefix`` is literal, or a regular expression (dots matching any character) when ``escape_prefix`` is False.
    """
    escaped = re.escape(prefix) if escape_prefix else prefix
    return [Rule(rf"^({escaped}\.\d+\.){re.escape(old)}\.", rf"\g<1>{new}.") for old, new in renames.items()]


_CSP_RENAMES = {
    "conv1": "main",
    "conv2": "shortcut",
}
_REPVGG_RENAMES = {
    "conv1": "conv3x3",
    "conv2": "conv1x1",
    "se_module.conv_mask": "gate.attention_pool",
    "se_module.se_module": "gate.excite",
}

_BACKBONE_AND_TWO_STAGE_RULES: list[Rule] = [
    # backbones (ResNet and ConvNeXt keep their names). The official Swin-L and FocalNet-L backbones are an
    # ``nn.Sequential`` of the feature extractor (``0``) and a post-processing module (``1``: FocalNet's per-stage
    # LayerNorms ``norm{i}``, ``i`` the stage index).
    Rule(r"^backbone\.0\.(features|patch_embed|layers)\.", r"backbone.\1."),
    Rule(r"^backbone\.1\.norm(\d+)\.", r"backbone.output_norms.stage\1."),
    # two-stage projection and heads
    Rule(r"^transformer\.enc_output\.", "transformer.proposal_generator.output_proj."),
    Rule(r"^transformer\.enc_output_norm\.", "transformer.proposal_generator.output_norm."),
    Rule(r"^transformer\.encoder_class_head\.", "transformer.enc_class_head."),
    Rule(r"^transformer\.encoder_bbox_head\.", "transformer.enc_box_head."),
]

# Applied in order, each to the result of the previous ones. A key is *known* when at least one rule matches it
# or it is listed in IDENTITY_PREFIXES.
_SALIENCE_RULES: list[Rule] = [
    *_BACKBONE_AND_TWO_STAGE_RULES,
    # salience prediction and hierarchical filtering
    Rule(r"^transformer\.alpha$", "transformer.encoder.salience.alpha"),
    Rule(r"^transformer\.enc_mask_predictor\.layer1\.0\.", "transformer.encoder.salience.predictor.norm."),
    Rule(r"^transformer\.enc_mask_predictor\.layer1\.1\.", "transformer.encoder.salience.predictor.proj."),
    Rule(r"^transformer\.enc_mask_predictor\.layer2\.", "transformer.encoder.salience.predictor.mlp."),
    Rule(r"^transformer\.(level|layer)_filter_ratio$", r"transformer.encoder.token_filter.\1_filter_ratio"),
    # filtered encoder layers
    *_layer_rules(
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
    *_layer_rules("transformer.memory_fusion.top_down_blocks", _CSP_RENAMES),
    *_layer_rules("transformer.memory_fusion.bottom_up_blocks", _CSP_RENAMES),
    Rule(r"^(transformer\.memory_fusion\.\w+_blocks\.\d+\.)bottlenecks\.", r"\g<1>blocks."),
    *_layer_rules(r"transformer.memory_fusion.\w+_blocks.\d+.blocks", _REPVGG_RENAMES, escape_prefix=False),
    # decoder
    *_layer_rules(
        "transformer.decoder.layers",
        {
            "norm2": "self_attn_norm",
            "norm1": "cross_attn_norm",
            "linear1": "ffn.linear1",
            "linear2": "ffn.linear2",
            "norm3": "ffn.norm",
        },
    ),
    Rule(r"^transformer\.decoder\.class_head\.", "transformer.decoder.class_heads."),
    Rule(r"^transformer\.decoder\.bbox_head\.", "transformer.decoder.box_heads."),
    # contrastive denoising
    Rule(r"^denoising_generator\.", "denoising."),
]

RULES: dict[str, list[Rule]] = {"salience_detr": _SALIENCE_RULES}

# Keys whose names do not change.
IDENTITY_PREFIXES: dict[str, tuple[str, ...]] = {
    "salience_detr": (
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
}

# Official keys that alias another official key (the same module registered twice): (alias regex, target).
ALIASES: dict[str, list[Rule]] = {
    "salience_detr": [Rule(r"^transformer\.encoder\.enhance_mcsp\.", "transformer.encoder_class_head.")],
}


# Relation DETR (xiuqhou/Relation-DETR); the models of projects/lp_detr. Its backbones are Salience DETR's classes:
# ResNet and ConvNeXt-L keep their names; Swin-L and FocalNet-L are ``nn.Sequential(extractor, post-process)``, the
# post-process holding FocalNet's per-stage LayerNorms ``norm{i}`` (stages 0-3 in the official FocalNet-L model).
_DECODER_LAYER_RENAMES = {
    "norm2": "self_attn_norm",
    "norm1": "cross_attn_norm",
    "linear1": "ffn.linear1",
    "linear2": "ffn.linear2",
    "norm3": "ffn.norm",
}
_RELATION_RULES: list[Rule] = [
    *_BACKBONE_AND_TWO_STAGE_RULES,
    Rule(r"^transformer\.hybrid_tgt_embed\.", "transformer.branches.hybrid.tgt_embed."),
    Rule(r"^transformer\.hybrid_class_head\.", "transformer.branches.hybrid.class_head."),
    Rule(r"^transformer\.hybrid_bbox_head\.", "transformer.branches.hybrid.box_head."),
    Rule(r"^transformer\.encoder\.memory_fusion\.", "transformer.encoder.layer_fusion."),
    *_layer_rules(
        "transformer.encoder.layers",
        {"norm1": "self_attn_norm", "linear1": "ffn.linear1", "linear2": "ffn.linear2", "norm2": "ffn.norm"},
    ),
    *_layer_rules("transformer.decoder.layers", _DECODER_LAYER_RENAMES),
    Rule(r"^transformer\.decoder\.class_head\.", "transformer.decoder.class_heads."),
    Rule(r"^transformer\.decoder\.bbox_head\.", "transformer.decoder.box_heads."),
    Rule(r"^transformer\.decoder\.position_relation_embedding\.pos_proj\.0\.", "transformer.decoder.relation.proj."),
    Rule(r"^denoising_generator\.", "denoising."),
]
RULES["relation_detr"] = _RELATION_RULES
IDENTITY_PREFIXES["relation_detr"] = (
    "backbone.",
    "neck.convs.",
    "transformer.level_embeds",
    "transformer.tgt_embed.",
    "transformer.encoder.layers.",
    "transformer.decoder.layers.",
    "transformer.decoder.ref_point_head.",
    "transformer.decoder.query_scale.",
    "transformer.decoder.norm.",
)


def load_official_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of an official checkpoint file (``{"model": ...}`` unwrapped), on CPU."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return dict(checkpoint)


def _rename(key: str, rules: Iterable[Rule]) -> tuple[str, bool]:
    """``key`` after every rule, and whether any rule matched."""
    matched = False
    for rule in rules:
        new_key, count = re.subn(rule.pattern, rule.replacement, key)
        matched = matched or count > 0
        key = new_key
    return key, matched


def _drop_aliases(state: dict[str, Tensor], aliases: Iterable[Rule]) -> dict[str, Tensor]:
    """``state`` without alias keys, after checking each equals the key it aliases."""
    kept = {}
    for key, value in state.items():
        alias_rule = next((a for a in aliases if re.search(a.pattern, key)), None)
        if alias_rule is None:
            kept[key] = value
            continue
        target = re.sub(alias_rule.pattern, alias_rule.replacement, key)
        if target not in state or not torch.equal(state[target], value):
            raise ValueError(f"checkpoint key {key!r} should alias {target!r}, which is missing or different")
    return kept


def _to_float32(value: Tensor) -> Tensor:
    return value.float() if value.is_floating_point() else value


def convert_state_dict(
    state: Mapping[str, Tensor], model: str = "salience_detr", reference_keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Renames an official state dict into the project's layout.

    Args:
        state: the official state dict (any floating dtype).
        model: which rule table to use (a key of :data:`RULES`).
        reference_keys: the project model's ``state_dict()`` keys; when given, the result must have exactly
            these keys.

    Returns:
        the converted state dict, floating tensors in float32.

    Raises:
        KeyError: unknown model, keys no rule accounts for, or (with ``reference_keys``) unexpected or missing
            keys; the message lists them.
        ValueError: an alias key differs from the key it aliases.
    """
    if model not in RULES:
        raise KeyError(f"no conversion rules for model {model!r}; known: {sorted(RULES)}")
    state = _drop_aliases(dict(state), ALIASES.get(model, []))
    converted, unknown = {}, []
    for key, value in state.items():
        new_key, matched = _rename(key, RULES[model])
        if not matched and not key.startswith(IDENTITY_PREFIXES.get(model, ())):
            unknown.append(key)
        converted[new_key] = _to_float32(value)
    if unknown:
        raise KeyError(f"{len(unknown)} checkpoint keys match no {model} conversion rule: {sorted(unknown)}")
    if reference_keys is not None:
        _check_against_reference(converted, set(reference_keys))
    return converted


def _check_against_reference(converted: Mapping[str, Tensor], reference: set[str]) -> None:
    unexpected = sorted(set(converted) - reference)
    missing = sorted(reference - set(converted))
    if unexpected or missing:
        raise KeyError(f"converted checkpoint does not fit the model: unexpected keys {unexpected}, missing {missing}")


def _reference_keys(config_path: str | None) -> list[str] | None:
    """State-dict keys of the model a LazyConfig builds (backbone weights not loaded), or None."""
    if config_path is None:
        return None
    from core.lazy import LazyConfig, instantiate

    cfg = LazyConfig.load(config_path)
    if "weights" in cfg.model.get("backbone", {}):
        cfg.model.backbone.weights = None
    return list(instantiate(cfg.model).state_dict().keys())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="official checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="converted checkpoint, saved as {'model': state_dict}")
    parser.add_argument("--model", default="salience_detr", choices=sorted(RULES), help="(default: %(default)s)")
    parser.add_argument("--config", default=None, help="LazyConfig of the target model, to verify every key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    state = load_official_checkpoint(args.input)
    converted = convert_state_dict(state, args.model, _reference_keys(args.config))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": converted}, args.output)
    print(f"converted {len(state)} keys into {len(converted)} ({args.model}) -> {args.output}")


if __name__ == "__main__":
    main()
