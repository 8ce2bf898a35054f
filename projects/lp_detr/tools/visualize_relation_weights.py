#!/usr/bin/env python
"""Plots LP-DETR's relation mixing weights Lambda (local / medium / global) per decoder layer (paper Figure 3).

Reads either the ``relation_weights.json`` that the training hook writes, or a checkpoint with its config
(``model.transformer.decoder.relation.lambda_table()``). Row 0 is drawn hatched and marked unused: the first
decoder layer has no relation bias.

Examples::

    python projects/lp_detr/tools/visualize_relation_weights.py \\
        --json output/lp_detr_r18_synthetic/relation_weights.json --output /tmp/lambda.png
    python projects/lp_detr/tools/visualize_relation_weights.py \\
        --config-file output/lp_detr_r18_synthetic/config.yaml \\
        --weights output/lp_detr_r18_synthetic/model_final.pth --output /tmp/lambda.png
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)  # the repository root

from core.fileio import read_json  # noqa: E402
from projects.lp_detr.visualization import save_relation_weights_plot  # noqa: E402

logger = logging.getLogger("visualize_relation_weights")
SCOPES = ("local", "medium", "global")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", help="relation_weights.json written by projects/lp_detr/hooks.py")
    source.add_argument("--weights", help="LP-DETR checkpoint (needs --config-file)")
    parser.add_argument("--config-file", help="the checkpoint's config")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, key=value")
    args = parser.parse_args(argv)
    if args.weights and not args.config_file:
        parser.error("--weights needs --config-file")
    return args


def table_from_json(path: str) -> tuple[list[list[float]], list[str], list[int], str]:
    """``(table, scopes, unused rows, title)`` of a ``relation_weights.json``."""
    data = read_json(path, "relation weights file")
    if not isinstance(data, dict) or "lambda" not in data:
        raise ValueError(f"{path} has no 'lambda' table (is it LP-DETR's relation_weights.json?)")
    title = f"LP-DETR Lambda per decoder layer (iteration {data.get('iteration', '?')})"
    return data["lambda"], list(data.get("scopes", SCOPES)), list(data.get("unused_rows", [0])), title


def table_from_checkpoint(
    config_file: str, weights: str, opts: list[str]
) -> tuple[list[list[float]], list[str], list[int], str]:
    """``(table, scopes, unused rows, title)`` of an LP-DETR checkpoint's ``relation.lambda_table()``."""
    from engine.predictor import DefaultPredictor

    model = DefaultPredictor.from_config(config_file, weights, opts, device="cpu").model
    relation = getattr(getattr(getattr(model, "transformer", None), "decoder", None), "relation", None)
    if relation is None or not hasattr(relation, "lambda_table"):
        raise ValueError(
            f"the model {type(model).__name__} of {config_file} has no LP-DETR relation weights "
            "(model.transformer.decoder.relation.lambda_table); is it an LP-DETR config?"
        )
    table = relation.lambda_table().tolist()
    return table, list(SCOPES), [0], f"LP-DETR Lambda per decoder layer ({os.path.basename(weights)})"


def main(argv: list[str] | None = None) -> str:
    """Runs the script; returns the path of the PNG."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    if args.json:
        table, scopes, unused, title = table_from_json(args.json)
    else:
        table, scopes, unused, title = table_from_checkpoint(args.config_file, args.weights, args.opts)
    path = save_relation_weights_plot(table, args.output, scopes=scopes, unused_rows=unused, title=title)
    logger.info(f"wrote {path} ({len(table)} decoder layers)")
    return path


if __name__ == "__main__":
    main()
