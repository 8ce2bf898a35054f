"""Converting official checkpoints (xiuqhou/Salience-DETR, xiuqhou/Relation-DETR layouts) into this project's keys.

A conversion is an ordered table of regular-expression renames (:class:`ConversionRules`), each applied to the
result of the previous ones; a key is *known* when a rule matched it or it starts with one of the table's identity
prefixes. Aliases (one official module registered under two names) are checked to be equal and dropped. Here live
the rules of the pieces every model shares (backbones, two-stage heads, the DINO-style decoder and denoising); each
project adds its own in ``projects/<name>/conversion.py`` and ``scripts/convert_checkpoint.py`` collects them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BACKBONE_AND_TWO_STAGE_RULES",
    "DECODER_RULES",
    "ConversionRules",
    "Rule",
    "convert_with",
    "layer_rules",
    "load_official_checkpoint",
]


class Rule(NamedTuple):
    """Renames the part of a key matching ``pattern`` to ``replacement`` (``re.sub`` syntax)."""

    pattern: str
    replacement: str


@dataclass(frozen=True)
class ConversionRules:
    """The conversion of one official model.

    Attributes:
        rules: renames, applied in order.
        identity_prefixes: keys starting with these keep their names.
        aliases: ``(alias regex, target)`` rules of official keys that duplicate another official key.
    """

    rules: list[Rule]
    identity_prefixes: tuple[str, ...] = ()
    aliases: list[Rule] = field(default_factory=list)


def layer_rules(prefix: str, renames: Mapping[str, str], escape_prefix: bool = True) -> list[Rule]:
    """Rules renaming the children of ``<prefix>.<i>.`` (``renames``: official child -> project child).

    ``prefix`` is literal, or a regular expression (dots matching any character) when ``escape_prefix`` is False.
    """
    escaped = re.escape(prefix) if escape_prefix else prefix
    return [Rule(rf"^({escaped}\.\d+\.){re.escape(old)}\.", rf"\g<1>{new}.") for old, new in renames.items()]


BACKBONE_AND_TWO_STAGE_RULES: list[Rule] = [
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

#: the DINO-style decoder layers (self-attention, cross-attention, FFN), their heads, and the denoising generator
DECODER_RULES: list[Rule] = [
    *layer_rules(
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
    Rule(r"^denoising_generator\.", "denoising."),
]


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


def convert_with(
    conversion: ConversionRules, state: Mapping[str, Tensor], name: str, reference_keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Renames ``state`` with ``conversion`` (floating tensors to float32); see :func:`convert_state_dict` of
    ``scripts/convert_checkpoint.py`` for the errors. ``name`` names the model in them."""
    state = _drop_aliases(dict(state), conversion.aliases)
    converted, unknown = {}, []
    for key, value in state.items():
        new_key, matched = _rename(key, conversion.rules)
        if not matched and not key.startswith(conversion.identity_prefixes):
            unknown.append(key)
        converted[new_key] = value.float() if value.is_floating_point() else value
    if unknown:
        raise KeyError(f"{len(unknown)} checkpoint keys match no {name} conversion rule: {sorted(unknown)}")
    if reference_keys is not None:
        reference = set(reference_keys)
        unexpected, missing = sorted(set(converted) - reference), sorted(reference - set(converted))
        if unexpected or missing:
            raise KeyError(
                f"converted checkpoint does not fit the model: unexpected keys {unexpected}, missing {missing}"
            )
    return converted
