"""Training hooks of LP-DETR: the learnt progressive relation weights ``Lambda`` as a table in the output directory.

Use through the generic ``train.hooks`` key of the training config (``tools/train_net.py`` instantiates and
registers the hooks after its default ones)::

    from core.lazy import LazyCall as L
    from projects.lp_detr.hooks import RelationWeightsWriter

    train.hooks = [L(RelationWeightsWriter)(period="${...eval_period}")]

``output_dir`` left unset is filled in with ``train.output_dir`` by ``tools/train_net.py``.
"""

from __future__ import annotations

import csv
import json
import logging
import os

from torch import Tensor, nn

from core import comm
from engine.ema import unwrap_model
from engine.train_loop import HookBase

__all__ = ["RelationWeightsWriter", "find_progressive_relation", "format_lambda_table", "lambda_table_record"]

logger = logging.getLogger(__name__)

SCOPES = ("local", "medium", "global")
UNUSED_ROW_NOTE = (
    "row 0 (decoder layer 0) is unused by the model: the first decoder layer has no relation bias (there are no "
    "earlier boxes); it gets no gradient and changes, if at all, only through weight decay"
)


def find_progressive_relation(model: nn.Module, module_path: str = "transformer.decoder.relation") -> nn.Module:
    """The progressive relation embedding of ``model`` (unwrapped from DDP), at the dotted ``module_path``.

    Raises:
        ValueError: naming the path when the model has no module there, or one without ``lambda_table``
            (e.g. Relation DETR's plain ``BoxRelationEmbedding``, or a decoder without relations).
    """
    model = unwrap_model(model)
    module: object = model
    for i, name in enumerate(module_path.split(".")):
        if not hasattr(module, name):
            where = ".".join(module_path.split(".")[:i]) or "the model"
            raise ValueError(
                f"{type(model).__name__} has no progressive relation at '{module_path}': {where} has no '{name}' "
                "(RelationWeightsWriter is for LP-DETR models; remove it from train.hooks for other models)"
            )
        module = getattr(module, name)
    if module is None or not callable(getattr(module, "lambda_table", None)):
        raise ValueError(
            f"{type(model).__name__}.{module_path} is {type(module).__name__}, not a progressive relation with "
            "lambda_table() (LP-DETR's ProgressiveRelationEmbedding); RelationWeightsWriter is for LP-DETR models, "
            "remove it from train.hooks for other models"
        )
    return module


def _rows(table: Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in table.detach().float().cpu()]


def lambda_table_record(relation: nn.Module, iteration: int | None = None) -> dict:
    """The weights of ``relation`` as a JSON-able dict.

    ``lambda`` is what the model multiplies the local / medium / global relations by (the softmax of each row of
    ``layer_weights`` with ``normalize_lambda``, else ``layer_weights`` itself); ``layer_weights`` is the raw
    learnt parameter. Both are ``[decoder layers, 3]``.
    """
    normalize = bool(getattr(relation, "normalize_lambda", False))
    effective = relation.lambda_table()
    raw = getattr(relation, "layer_weights", effective)
    return {
        "iteration": iteration,
        "scopes": list(SCOPES),
        "num_layers": int(effective.shape[0]),
        "normalize_lambda": normalize,
        "lambda": _rows(effective),
        "layer_weights": _rows(raw),
        "unused_rows": [0],
        "note": UNUSED_ROW_NOTE,
    }


def format_lambda_table(record: dict) -> str:
    """Readable text of a :func:`lambda_table_record`: one row per decoder layer, columns local / medium / global."""
    normalize = record["normalize_lambda"]
    header = ["layer", *SCOPES]
    if normalize:
        header += [f"{scope} (softmax)" for scope in SCOPES]
    rows = []
    for layer, (raw, effective) in enumerate(zip(record["layer_weights"], record["lambda"])):
        values = raw + effective if normalize else effective
        name = f"{layer} (unused)" if layer in record["unused_rows"] else str(layer)
        rows.append([name, *(f"{v:.4f}" for v in values)])
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]

    def line(cells):
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))

    at = "" if record["iteration"] is None else f" after {record['iteration']} iterations"
    kind = "raw layer_weights and their per-layer softmax (used by the model)" if normalize else "used as they are"
    title = f"LP-DETR relation weights Lambda{at} (rows: decoder layers; {kind}):"
    return "\n".join([title, line(header), *(line(r) for r in rows), f"Note: {record['note']}."])


def write_lambda_table(record: dict, output_dir: str, file_prefix: str = "relation_weights") -> list[str]:
    """Writes ``{file_prefix}.json`` and ``{file_prefix}.csv`` to ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{file_prefix}.json")
    csv_path = os.path.join(output_dir, f"{file_prefix}.csv")
    with open(json_path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(json_path + ".tmp", json_path)
    header = ["layer", "used", *SCOPES]
    if record["normalize_lambda"]:
        header += [f"raw_{scope}" for scope in SCOPES]
    with open(csv_path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for layer, (effective, raw) in enumerate(zip(record["lambda"], record["layer_weights"])):
            row = [layer, int(layer not in record["unused_rows"]), *effective]
            if record["normalize_lambda"]:
                row += raw
            writer.writerow(row)
    os.replace(csv_path + ".tmp", csv_path)
    return [json_path, csv_path]


class RelationWeightsWriter(HookBase):
    """Logs LP-DETR's ``Lambda`` table and writes ``relation_weights.json`` / ``.csv`` (main process only).

    The table is written after training (also after an interrupted run: it records the iterations done) and,
    with ``period > 0``, every ``period`` iterations (each write replaces the files). The CSV has one row per
    decoder layer: ``layer, used, local, medium, global`` (the weights the model uses), plus ``raw_*`` (the
    parameter before the softmax) with ``normalize_lambda``. Row 0 is unused by the model, as the text and the
    files say.

    The model is checked before training starts: one without a progressive relation is an error.

    Args:
        output_dir: folder of the files (``tools/train_net.py`` sets ``train.output_dir`` when unset).
        period: also write every ``period`` iterations (0: only after training; e.g. ``"${...eval_period}"``).
        module_path: dotted path of the relation embedding in the (unwrapped) model.
        file_prefix: name of the files without the suffix.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        period: int = 0,
        module_path: str = "transformer.decoder.relation",
        file_prefix: str = "relation_weights",
    ) -> None:
        if period is None or period < 0:
            raise ValueError(f"RelationWeightsWriter period must be >= 0, got {period}")
        self.output_dir = output_dir
        self.period = int(period)
        self.module_path = module_path
        self.file_prefix = file_prefix
        self._relation: nn.Module | None = None

    def before_train(self) -> None:
        if not self.output_dir:
            raise ValueError("RelationWeightsWriter needs an output_dir (train.output_dir when used via train.hooks)")
        self._relation = find_progressive_relation(self.trainer.model, self.module_path)

    def write(self, iteration: int | None) -> dict | None:
        """Logs the table and writes the files (main process); returns the record (None on other ranks)."""
        if self._relation is None or not comm.is_main_process():
            return None
        record = lambda_table_record(self._relation, iteration)
        paths = write_lambda_table(record, self.output_dir, self.file_prefix)
        logger.info(f"{format_lambda_table(record)}\nWritten to {', '.join(paths)}")
        return record

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done != self.trainer.max_iter:
            self.write(done)

    def after_train(self) -> None:
        # After a complete run trainer.iter == max_iter; after a crash it is the failed iteration (not done).
        self.write(self.trainer.iter)
