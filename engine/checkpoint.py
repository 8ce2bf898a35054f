"""Checkpointing on top of fvcore's ``Checkpointer``.

Additions over fvcore: atomic writes (a crash while saving never leaves a
truncated ``.pth`` or ``last_checkpoint``), only the main process writes, one
clear warning listing the tensors skipped for shape mismatches (fine-tuning with
another ``num_classes``), and an error when a checkpoint shares no tensor with
the model (a checkpoint of another model).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer, _IncompatibleKeys
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvPeriodicCheckpointer
from torch import nn

from . import comm

__all__ = ["DetectionCheckpointer", "PeriodicCheckpointer", "atomic_torch_save"]

logger = logging.getLogger(__name__)


def _atomic_write(path: str, write_fn) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same directory, then an atomic rename."""
    _atomic_write(path, lambda f: torch.save(obj, f))


class DetectionCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` that writes atomically, on the main process only.

    Args:
        model: the model; a DDP-wrapped model is unwrapped (fvcore does it), so
            checkpoints load into a single-process model.
        save_dir: directory for ``*.pth`` and ``last_checkpoint``.
        save_to_disk: defaults to ``comm.is_main_process()``.
        checkpointables: other objects with ``state_dict``/``load_state_dict`` (e.g. ``trainer``).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None, **checkpointables):
        super().__init__(
            model,
            save_dir,
            save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )

    def save(self, name: str, *, tag_last: bool = True, **kwargs: Any) -> None:
        """Writes ``{name}.pth``; ``tag_last`` makes it the one ``--resume`` continues from."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
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
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        if path and not os.path.isfile(path):
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise FileNotFoundError(f"Checkpoint '{path}' not found")
            path = local
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, f: str) -> dict[str, Any]:
        try:
            checkpoint = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"Cannot read checkpoint '{f}': {e}") from e
        if not isinstance(checkpoint, dict):
            raise ValueError(f"Checkpoint '{f}' holds a {type(checkpoint).__name__}, expected a dict")
        if "model" not in checkpoint:
            if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
                checkpoint = {"model": checkpoint}  # a bare state dict
            else:
                raise ValueError(f"Checkpoint '{f}' has no 'model' entry (keys: {sorted(checkpoint)[:10]})")
        checkpoint["__file__"] = f
        return checkpoint

    def _load_model(self, checkpoint: dict[str, Any]) -> _IncompatibleKeys:
        source = checkpoint.pop("__file__", "<checkpoint>")
        state = checkpoint["model"]
        model_keys = set(self.model.state_dict().keys())
        stripped = {k[len("module.") :] if k.startswith("module.") else k for k in state}
        if state and model_keys and not (stripped & model_keys):
            raise ValueError(
                f"Checkpoint '{source}' does not fit the model {type(self.model).__name__}: none of its "
                f"{len(state)} tensors has a name of the model (e.g. checkpoint '{next(iter(state))}' vs model "
                f"'{next(iter(model_keys))}'). Is it a checkpoint of another model, or in the official layout "
                "(convert it with scripts/convert_checkpoint.py)?"
            )
        return super()._load_model(checkpoint)

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        if incompatible.incorrect_shapes:
            rows = "\n".join(
                f"  {k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in incompatible.incorrect_shapes
            )
            self.logger.warning(
                f"Skipped {len(incompatible.incorrect_shapes)} tensor(s) whose shapes differ from the model "
                f"(expected when fine-tuning with another number of classes); they keep their initial values:\n{rows}"
            )
        skipped = {k for k, _, _ in incompatible.incorrect_shapes}
        super()._log_incompatible_keys(
            incompatible._replace(
                incorrect_shapes=[], missing_keys=[k for k in incompatible.missing_keys if k not in skipped]
            )
        )


class PeriodicCheckpointer(_FvPeriodicCheckpointer):
    """fvcore's periodic checkpointer (``model_{iter:07d}.pth`` every ``period``, ``model_final.pth`` at the end)."""
