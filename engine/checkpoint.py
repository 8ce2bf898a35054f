"""Checkpointing on top of fvcore's ``Checkpointer``.

Additions over fvcore:

- Atomic writes (a crash while saving never leaves a truncated ``.pth`` or ``last_checkpoint``); only the main
  process writes.
- A load policy chosen by the caller (``mode`` of :meth:`DetectionCheckpointer.load` and
  :meth:`DetectionCheckpointer.resume_or_load`):

  ``"eval"`` (evaluation, inference, demo)
      Every model tensor must come from the checkpoint. A model tensor the checkpoint lacks, or has with another
      shape, is an :class:`IncompatibleCheckpointError` naming them; the only exceptions are the tensors whose
      shape depends on ``num_classes`` (see below), which are skipped with one warning, and BatchNorm's
      ``num_batches_tracked`` counters, which inference does not use. A checkpoint of a run that evaluated its
      EMA weights (``train.model_ema.enabled`` with ``use_ema_weights_for_eval``: ``tools/train_net.py`` then
      writes ``"eval_weights": "ema"`` into it) gives its EMA weights, the ones whose AP the run reported, as
      detrex's ``--eval-only`` does; the other modes load the raw weights (``"model"``).
  ``"finetune"`` (``train.init_checkpoint``; the default)
      Loads what fits: missing, unexpected and mis-shaped tensors are warnings (mis-shaped ones keep their initial
      values). A checkpoint that shares no tensor name with the model, or provides fewer than half of the model's
      tensors (state-dict entries loaded with the model's shape), is an error.
  ``"resume"`` (our own checkpoint of the same run)
      Model and trainer state. Every model tensor must be there with the model's shape, ``num_classes`` included:
      a resumed run cannot change its model.

  In every mode, checkpoint tensors the model does not have are one warning line, and every message names the file,
  the counts and a few examples (numbered modules are shown once, ``layers.*.norm.weight (x6)``).

- Class-dependent tensors. A mis-shaped tensor depends on ``num_classes`` when the model has an integer
  ``num_classes`` attribute ``C`` and (a) the checkpoint and model shapes differ in the first dimension only (the
  output dimension of every Linear / Conv / Embedding weight and bias), (b) the model's size there is ``C`` or
  ``C + 1`` (classification heads ``[C, D]`` / ``[C]``, CenterNet's heatmap conv ``[C, D, 1, 1]``, denoising label
  embeddings ``[C, D]``, or ``[C + 1, D]`` as in DINO), (c) all such tensors agree on the checkpoint's number of
  classes ``C'`` (the checkpoint's size minus the same offset 0 or 1) and (d) at least one of them has exactly
  ``C`` rows in the model (every detector here has ``[C, D]`` class heads; this keeps e.g. a 4-row box head of a
  3-class model from passing for a class tensor). When (c) or (d) fails, none of them is class-dependent. What the
  rule cannot tell apart is a non-class tensor whose first dimension happens to be ``C`` and that changed along
  with the class heads.

- ``--resume`` falls back over unreadable checkpoints (missing, truncated, not a torch file); see
  :meth:`DetectionCheckpointer.resume_or_load`.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from fvcore.common.checkpoint import Checkpointer, _filter_reused_missing_keys, _IncompatibleKeys
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvPeriodicCheckpointer
from torch import nn

from core import comm
from core.fileio import atomic_write, write_text

__all__ = [
    "LOAD_MODES",
    "EVAL_WEIGHTS_KEY",
    "CheckpointReadError",
    "DetectionCheckpointer",
    "IncompatibleCheckpointError",
    "LoadMode",
    "PeriodicCheckpointer",
    "atomic_torch_save",
    "class_dependent_keys",
]

logger = logging.getLogger(__name__)

LoadMode = Literal["eval", "finetune", "resume"]
LOAD_MODES: tuple[str, ...] = ("eval", "finetune", "resume")

#: the checkpoint entry that says which weights the run evaluated ("ema": its EMA weights); see the "eval" mode
EVAL_WEIGHTS_KEY = "eval_weights"
EMA_HOOK = "EMAHook"  # the trainer-state key (class name) of :class:`engine.hooks.EMAHook`
_PERIODIC = re.compile(r"model_(\d+)\.pth")
_FINAL = "model_final.pth"
_EXAMPLES = 6  # modules shown in a message (with their tensors)
_ROWS = 8  # shape rows shown in the mismatch warning
_HINT = (
    "It is a checkpoint of another model or config: use the checkpoint of this config's model "
    "(official checkpoints convert with scripts/convert_checkpoint.py)."
)

ShapeRow = tuple[str, tuple[int, ...], tuple[int, ...]]  # (key, checkpoint shape, model shape)


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read: truncated, not a torch file, or not a checkpoint dict.

    Attributes:
        path: the file.
        reason: one line saying why.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Cannot read checkpoint '{path}': {reason}")
        self.path = path
        self.reason = reason


class IncompatibleCheckpointError(ValueError):
    """A readable checkpoint whose tensors do not fit the model under the chosen load mode."""


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same directory, then an atomic rename."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _pattern(key: str) -> str:
    """``transformer.decoder.layers.3.norm.weight`` -> ``transformer.decoder.layers.*.norm.weight``."""
    return ".".join("*" if part.isdigit() else part for part in key.split("."))


def _summarize_keys(keys: Iterable[str], limit: int = _EXAMPLES) -> str:
    """The first ``limit`` modules of ``keys`` with their tensors, numbered modules folded into one pattern.

    Args:
        keys: tensor names, in the order to show them (the state-dict order reads best).
        limit: how many modules to show before ``(+N more tensors)``.

    Returns:
        e.g. ``"backbone.conv1.weight, layers.*.norm.{weight, bias} (x6) (+12 more tensors)"``.
    """
    groups: dict[str, dict[str, list[str]]] = {}  # owner pattern -> leaf -> keys
    for key in keys:
        owner, _, leaf = _pattern(key).rpartition(".")
        groups.setdefault(owner, {}).setdefault(leaf, []).append(key)
    shown, hidden = [], 0
    for owner, leaves in groups.items():
        members = [k for ks in leaves.values() for k in ks]
        if len(shown) == limit:
            hidden += len(members)
            continue
        owners = {k.rpartition(".")[0] for k in members}
        name = next(iter(owners)) if len(owners) == 1 else owner
        tail = next(iter(leaves)) if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        label = f"{name}.{tail}" if name else tail
        shown.append(label + (f" (x{len(owners)})" if len(owners) > 1 else ""))
    return ", ".join(shown) + (f" (+{hidden} more tensors)" if hidden else "")


def _prefix(key: str, depth: int) -> str:
    return ".".join(key.split(".")[:depth])


def _per_module(keys: Sequence[str], limit: int = 6) -> str:
    """Counts per module, e.g. ``"backbone 212, transformer 198"``; one level deeper while a single module holds all."""
    depth = 1
    while depth < 3 and all(k.count(".") > depth for k in keys) and len({_prefix(k, depth) for k in keys}) == 1:
        depth += 1
    counts = Counter(_prefix(key, depth) for key in keys)
    text = ", ".join(f"{name} {n}" for name, n in list(counts.items())[:limit])
    return text + (", ..." if len(counts) > limit else "")


def _shape_rows(rows: Sequence[ShapeRow], limit: int = _ROWS) -> list[str]:
    """One line per (pattern, checkpoint shape, model shape); a single key is shown by its own name."""
    groups: dict[tuple[str, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for key, ckpt, model in rows:
        groups.setdefault((_pattern(key), tuple(ckpt), tuple(model)), []).append(key)
    lines = [
        f"  {keys[0] if len(keys) == 1 else f'{pattern} (x{len(keys)})'}: checkpoint {ckpt} vs model {model}"
        for (pattern, ckpt, model), keys in groups.items()
    ]
    return lines[:limit] + ([f"  ... and {len(lines) - limit} more"] if len(lines) > limit else [])


# ----------------------------------------------------------------------------------------------------------------
# How a checkpoint fits a model


def _model_num_classes(model: nn.Module) -> int | None:
    value = getattr(model, "num_classes", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def class_dependent_keys(model: nn.Module, mismatched: Sequence[ShapeRow]) -> tuple[list[ShapeRow], int | None]:
    """The mis-shaped tensors whose shape depends on ``num_classes`` (rule in the module docstring).

    Args:
        model: the model; without an integer ``num_classes`` attribute nothing is class-dependent.
        mismatched: ``(key, checkpoint shape, model shape)`` of the tensors whose shapes differ.

    Returns:
        The class-dependent rows and the checkpoint's number of classes (``None`` when there are none).
    """
    num_classes = _model_num_classes(model)
    if num_classes is None:
        return [], None
    by_classes: dict[int, list[ShapeRow]] = {}
    for key, ckpt, shape in mismatched:
        if len(ckpt) != len(shape) or not shape or tuple(ckpt[1:]) != tuple(shape[1:]):
            continue
        offset = shape[0] - num_classes
        if offset in (0, 1) and ckpt[0] - offset >= 1:
            by_classes.setdefault(ckpt[0] - offset, []).append((key, ckpt, shape))
    if len(by_classes) != 1:
        return [], None
    ((checkpoint_classes, rows),) = by_classes.items()
    if all(shape[0] != num_classes for _, _, shape in rows):
        return [], None  # no [C, ...] tensor (a class head) among them
    return rows, checkpoint_classes


@dataclass
class _Fit:
    """How a checkpoint's state dict fits a model's."""

    total: int  # model state-dict entries
    missing: list[str] = field(default_factory=list)  # model entries not in the checkpoint (aliases filtered)
    unexpected: list[str] = field(default_factory=list)  # checkpoint entries not in the model
    mismatched: list[ShapeRow] = field(default_factory=list)
    class_rows: list[ShapeRow] = field(default_factory=list)  # the class-dependent part of ``mismatched``
    checkpoint_classes: int | None = None

    @property
    def loaded(self) -> int:
        return self.total - len(self.missing) - len(self.mismatched)

    @property
    def required_missing(self) -> list[str]:
        """Missing entries that matter for inference (BatchNorm's ``num_batches_tracked`` does not)."""
        return [k for k in self.missing if not k.endswith("num_batches_tracked")]

    @property
    def other_mismatched(self) -> list[ShapeRow]:
        class_keys = {row[0] for row in self.class_rows}
        return [row for row in self.mismatched if row[0] not in class_keys]


def _measure_fit(model: nn.Module, state: dict[str, torch.Tensor]) -> _Fit:
    expected = model.state_dict()
    mismatched = []
    for key, value in state.items():
        target = expected.get(key)
        if target is None or isinstance(target, nn.parameter.UninitializedParameter):
            continue
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append((key, tuple(value.shape), tuple(target.shape)))
    absent = [k for k in expected if k not in state]
    missing = set(_filter_reused_missing_keys(model, absent)) if absent else set()
    class_rows, checkpoint_classes = class_dependent_keys(model, mismatched)
    return _Fit(
        total=len(expected),
        missing=[k for k in expected if k in missing],
        unexpected=[k for k in state if k not in expected],
        mismatched=mismatched,
        class_rows=class_rows,
        checkpoint_classes=checkpoint_classes,
    )


def _strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Keys of a model saved inside DataParallel / DDP (all of them start with ``module.``) without that prefix."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def _read_failure(path: str, error: Exception) -> str:
    """Why ``torch.load`` failed, in one line: empty, truncated, not a torch file, or the error itself."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if size == 0:
        return "empty file"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return f"truncated: a torch zip archive without its end record ({size} bytes)"
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        return f"not a torch file (it starts with {head!r})"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def _check_mode(mode: str) -> None:
    if mode not in LOAD_MODES:
        raise ValueError(f"Checkpoint load mode must be one of {LOAD_MODES}, got {mode!r}")


class DetectionCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` with atomic writes, load policies and a ``--resume`` that survives unreadable files.

    Args:
        model: the model; a DDP-wrapped model is unwrapped (fvcore does it), so
            checkpoints load into a single-process model.
        save_dir: directory for ``*.pth`` and ``last_checkpoint``.
        save_to_disk: defaults to ``comm.is_main_process()``.
        checkpointables: other objects with ``state_dict``/``load_state_dict`` (e.g. ``trainer``).

    Attributes:
        resumed_from: after :meth:`resume_or_load`, the file of ``save_dir`` it resumed from, or ``None`` when it
            loaded ``path`` instead (no ``--resume``, no checkpoint, or none of them readable). Callers decide the
            start iteration from it (``trainer.iter + 1`` if resumed, else 0), not from :meth:`has_checkpoint`.
        extra_state: plain data written into every checkpoint (``tools/train_net.py`` puts the training data's
            categories under ``"metadata"``, so a checkpoint names its classes without the dataset at hand).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None, **checkpointables):
        super().__init__(
            model,
            save_dir,
            save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )
        self.resumed_from: str | None = None
        self.extra_state: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------------------
    # Saving

    def save(self, name: str, *, tag_last: bool = True, **kwargs: Any) -> None:
        """Writes ``{name}.pth``; ``tag_last`` makes it the one ``--resume`` continues from."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(self.extra_state)
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        if tag_last:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_text(path, last_filename_basename)

    # ------------------------------------------------------------------------------------------------------------
    # Loading

    def load(
        self, path: str, checkpointables: list[str] | None = None, *, mode: LoadMode = "finetune"
    ) -> dict[str, Any]:
        """Loads ``path`` under the policy ``mode`` (see the module docstring).

        The file is read completely before any state changes, and the policy is checked before the model is
        touched: an error leaves the model and the checkpointables as they were.

        Args:
            path: local path or URL. Empty: nothing is loaded in "finetune" mode (the model keeps its initial
                weights); an error in "eval" and "resume" modes.
            checkpointables: names of the checkpointables to restore. ``None``: all of them in "resume" mode,
                none in "eval" and "finetune" modes (those load weights only).
            mode: "eval", "finetune" or "resume".

        Returns:
            The checkpoint's other entries (e.g. ``iteration``, ``metadata``).

        Raises:
            FileNotFoundError: no such file.
            CheckpointReadError: the file cannot be read.
            IncompatibleCheckpointError: the checkpoint does not fit the model under ``mode``.
        """
        _check_mode(mode)
        if not path:
            if mode != "finetune":
                raise ValueError(f"No checkpoint given: {mode} mode needs the checkpoint of the model")
            self.logger.info("No checkpoint given: the model keeps its initial weights")
            return {}
        local = self._local_file(path)
        return self._restore(self._load_file(local), local, checkpointables, mode)

    def resume_or_load(self, path: str, *, resume: bool = True, mode: LoadMode = "finetune") -> dict[str, Any]:
        """Resumes from the newest readable checkpoint of ``save_dir`` if ``resume``, else loads ``path``.

        With ``resume`` and a ``last_checkpoint`` file in ``save_dir``, the candidates (:meth:`resume_candidates`)
        are read newest first; an unreadable one (missing, truncated, not a torch file) is a warning naming it and
        the reason, and the next one is tried. The first readable one is loaded in "resume" mode (model and all
        checkpointables). When none is readable, a warning says so and ``path`` is loaded as without ``resume``:
        the run starts over from its initial checkpoint, as detectron2 does when there is no checkpoint to resume
        (the unreadable files stay until new checkpoints replace them). Without ``last_checkpoint`` nothing is
        resumed. A readable checkpoint that does not fit the model is an error, never skipped.

        Args:
            path: the initial checkpoint (``train.init_checkpoint``); may be empty in "finetune" mode.
            resume: whether to resume from ``save_dir``.
            mode: the policy for ``path``: "finetune" (training) or "eval" (evaluation).

        Returns:
            Same as :meth:`load`. :attr:`resumed_from` tells which file was resumed from, if any.
        """
        if mode == "resume":
            raise ValueError("resume_or_load: mode is the policy for `path`, 'finetune' or 'eval'; use resume=True")
        _check_mode(mode)
        self.resumed_from = None
        if resume and self.has_checkpoint():
            found = self._read_newest()
            if found is not None:
                self.resumed_from, checkpoint = found
                return self._restore(checkpoint, self.resumed_from, None, "resume")
            start = f"the initial checkpoint '{path}'" if path else "the initial weights"
            self.logger.warning(f"Resume: no checkpoint in '{self.save_dir}' can be read; starting from {start}")
        return self.load(path, checkpointables=[], mode=mode)

    def resume_candidates(self) -> list[str]:
        """Checkpoints of ``save_dir`` to resume from, in the order they are tried.

        1. the file named in ``last_checkpoint`` (every save but ``model_best.pth`` tags it: the newest state);
        2. periodic ``model_NNNNNNN.pth``, highest iteration first;
        3. ``model_final.pth``: when ``last_checkpoint`` names another file, ``model_final.pth`` was written before
           it, by an earlier run this one continues with a larger ``max_iter``, so it is older than this run's
           periodic checkpoints and comes last.

        ``model_best.pth`` is never a candidate: it is the best evaluation's state, not the latest one, and
        resuming from it would silently rewind the run. Other ``.pth`` files are ignored.
        """
        named = self.get_checkpoint_file()
        names = set(self.path_manager.ls(self.save_dir)) if self.path_manager.isdir(self.save_dir) else set()
        periodic = sorted((n for n in names if _PERIODIC.fullmatch(n)), key=lambda n: -int(_PERIODIC.fullmatch(n)[1]))
        ordered = [named] if os.path.basename(named) else []
        ordered += [os.path.join(self.save_dir, n) for n in [*periodic, _FINAL] if n in names]
        return list(dict.fromkeys(ordered))

    def _read_newest(self) -> tuple[str, dict[str, Any]] | None:
        """The first readable candidate and its content, warning for each unreadable one; ``None`` if none."""
        candidates = self.resume_candidates()
        if not candidates:
            self.logger.warning(f"Resume: '{self.save_dir}/last_checkpoint' names no file and no checkpoint is there")
        for i, candidate in enumerate(candidates):
            try:
                checkpoint = self._load_file(self._local_file(candidate))
            except (CheckpointReadError, OSError) as e:
                reason = e.reason if isinstance(e, CheckpointReadError) else "file not found"
                then = "trying the next newest one" if i + 1 < len(candidates) else "no older checkpoint is left"
                self.logger.warning(f"Resume: cannot read '{candidate}' ({reason}); {then}")
                continue
            if i:
                at = f" (iteration {checkpoint['iteration']})" if "iteration" in checkpoint else ""
                self.logger.warning(f"Resume: resuming from '{candidate}'{at}, the newest readable checkpoint")
            return candidate, checkpoint
        return None

    def _local_file(self, path: str) -> str:
        if os.path.isfile(path):
            return path
        local = self.path_manager.get_local_path(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return local

    def _load_file(self, f: str) -> dict[str, Any]:
        """Reads the whole file; a bare state dict becomes ``{"model": state}``.

        Raises:
            CheckpointReadError: truncated, not a torch file, or not a checkpoint dict.
        """
        try:
            checkpoint = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointReadError(f, _read_failure(f, e)) from e
        if not isinstance(checkpoint, dict):
            raise CheckpointReadError(f, f"it holds a {type(checkpoint).__name__}, expected a dict")
        if "model" not in checkpoint:
            if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
                raise CheckpointReadError(f, f"no 'model' entry (keys: {sorted(map(str, checkpoint))[:10]})")
            checkpoint = {"model": checkpoint}  # a bare state dict
        return checkpoint

    def _restore(
        self, checkpoint: dict[str, Any], path: str, checkpointables: list[str] | None, mode: LoadMode
    ) -> dict[str, Any]:
        """Loads a read checkpoint into the model and the checkpointables; returns its other entries."""
        self.logger.info(f"Loading checkpoint '{path}' ({mode} mode)")
        incompatible = self._load_model(checkpoint, path=path, mode=mode)
        self._log_incompatible_keys(incompatible, path=path)
        if checkpointables is None:
            checkpointables = list(self.checkpointables) if mode == "resume" else []
        for key in checkpointables:
            if key in checkpoint:
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
            elif mode == "resume":
                self.logger.warning(f"Checkpoint '{path}' has no '{key}' state; it keeps its current state")
        return checkpoint

    def _load_model(
        self, checkpoint: dict[str, Any], *, path: str = "<checkpoint>", mode: LoadMode = "finetune"
    ) -> _IncompatibleKeys:
        """Checks the fit under ``mode`` (raising before any change), then loads the tensors of the model's shapes.

        Returns:
            fvcore's ``_IncompatibleKeys`` (missing, unexpected and mis-shaped tensors).
        """
        state = checkpoint.pop("model")
        if mode == "eval":
            state = self._evaluated_weights(checkpoint, state, path)
        self._convert_ndarray_to_tensor(state)
        state = _strip_module_prefix(state)
        fit = _measure_fit(self.model, state)
        self._check_fit(fit, state, path, mode)
        skipped = {row[0] for row in fit.mismatched}
        self.model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
        return _IncompatibleKeys(
            missing_keys=fit.missing, unexpected_keys=fit.unexpected, incorrect_shapes=fit.mismatched
        )

    def _evaluated_weights(self, checkpoint: dict[str, Any], state: dict[str, Any], path: str) -> dict[str, Any]:
        """The EMA weights when the run that wrote ``checkpoint`` evaluated them, else ``state`` (the raw ones)."""
        if checkpoint.get(EVAL_WEIGHTS_KEY) != "ema":
            return state
        ema = checkpoint.get("trainer", {}).get("hooks", {}).get(EMA_HOOK, {}).get("state")
        if not isinstance(ema, dict):
            raise CheckpointReadError(
                path,
                "it says its run evaluated EMA weights ('eval_weights': 'ema') but holds no EMA state "
                f"(trainer.hooks.{EMA_HOOK}.state); it was edited or written by other code",
            )
        self.logger.info(f"Checkpoint '{path}': using its EMA weights, the ones its run evaluated")
        return dict(ema)

    # ------------------------------------------------------------------------------------------------------------
    # Policies and messages

    def _check_fit(self, fit: _Fit, state: dict[str, Any], path: str, mode: LoadMode) -> None:
        """Raises :class:`IncompatibleCheckpointError` when the checkpoint does not fit under ``mode``."""
        name = type(self.model).__name__
        if state and fit.total and len(fit.unexpected) == len(state):
            raise IncompatibleCheckpointError(
                f"Checkpoint '{path}' does not fit the model {name}: none of its {len(state)} tensors has a name "
                f"of the model (e.g. checkpoint '{next(iter(state))}' vs model "
                f"'{next(iter(self.model.state_dict()))}'). Is it a checkpoint of another model, or in the official "
                "layout (convert it with scripts/convert_checkpoint.py)?"
            )
        if mode == "finetune":
            self._check_finetune(fit, path)
            return
        mismatched = fit.other_mismatched if mode == "eval" else fit.mismatched
        if fit.required_missing or mismatched:
            raise IncompatibleCheckpointError(self._strict_message(fit, mismatched, path, mode))

    def _check_finetune(self, fit: _Fit, path: str) -> None:
        if 2 * fit.loaded >= fit.total:
            return
        lines = [
            f"Checkpoint '{path}' does not fit the model {type(self.model).__name__}: it provides only {fit.loaded} "
            f"of the model's {fit.total} tensors (fewer than half; {len(fit.missing)} missing, "
            f"{len(fit.mismatched)} of another shape)."
        ]
        if fit.missing:
            lines.append(f"  missing ({_per_module(fit.missing)}): {_summarize_keys(fit.missing)}")
        if fit.mismatched:
            lines.append(f"  of another shape: {_summarize_keys(row[0] for row in fit.mismatched)}")
        lines.append(
            f"  {_HINT} train.init_checkpoint takes a full-model checkpoint; backbone-only weights go to "
            "model.backbone.weights."
        )
        raise IncompatibleCheckpointError("\n".join(lines))

    def _strict_message(self, fit: _Fit, mismatched: list[ShapeRow], path: str, mode: LoadMode) -> str:
        why = "for evaluation every model tensor" if mode == "eval" else "to resume, every model tensor"
        lines = [f"Checkpoint '{path}' does not fit the model {type(self.model).__name__} ({why} must come from it):"]
        missing = fit.required_missing
        if missing:
            lines.append(
                f"  {len(missing)} of the model's {fit.total} tensors are missing ({_per_module(missing)}); "
                f"e.g. {_summarize_keys(missing)}"
            )
        if mismatched:
            lines.append(f"  {len(mismatched)} tensor(s) have another shape:")
            lines += _shape_rows(mismatched, limit=4)
        if mode == "eval":
            lines.append(f"  {_HINT}")
        else:
            lines.append(
                "  It was written by another model or config: resume with that run's config, or train in a new "
                "train.output_dir (or without --resume)."
            )
        return "\n".join(lines)

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys, *, path: str = "<checkpoint>") -> None:
        """At most three warnings: skipped mis-shaped tensors (a few rows), missing and unexpected ones (a line)."""
        if incompatible.incorrect_shapes:
            self.logger.warning(self._mismatch_message(incompatible.incorrect_shapes, path))
        if incompatible.missing_keys:
            self.logger.warning(
                f"{len(incompatible.missing_keys)} model tensor(s) are not in checkpoint '{path}'; they keep their "
                f"initial values: {_summarize_keys(incompatible.missing_keys)}"
            )
        if incompatible.unexpected_keys:
            self.logger.warning(
                f"Checkpoint '{path}' has {len(incompatible.unexpected_keys)} tensor(s) that the model "
                f"{type(self.model).__name__} does not use (ignored): {_summarize_keys(incompatible.unexpected_keys)}"
            )

    def _mismatch_message(self, rows: Sequence[ShapeRow], path: str) -> str:
        class_rows, checkpoint_classes = class_dependent_keys(self.model, rows)
        if class_rows and len(class_rows) == len(rows):
            why = (
                f"their shapes depend on num_classes (checkpoint {checkpoint_classes} classes, model "
                f"{_model_num_classes(self.model)}): expected when fine-tuning with another number of classes"
            )
        else:
            why = "their shapes differ from the model (expected when fine-tuning with another number of classes)"
        header = f"Skipped {len(rows)} tensor(s) of checkpoint '{path}'; {why}; they keep their initial values:"
        return "\n".join([header, *_shape_rows(rows)])


class PeriodicCheckpointer(_FvPeriodicCheckpointer):
    """fvcore's periodic checkpointer (``model_{iter:07d}.pth`` every ``period``, ``model_final.pth`` at the end)."""
