"""Training hooks with detectron2's names and call order semantics."""

from __future__ import annotations

import datetime
import logging
import math
import operator
import os
import time
from collections.abc import Callable, Sequence

import torch
from fvcore.common.timer import Timer

from core import comm
from evaluation.testing import flatten_results_dict

from .checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from .ema import ModelEMA
from .events import EventWriter
from .train_loop import HookBase

__all__ = [
    "IterationTimer",
    "PeriodicWriter",
    "PeriodicCheckpointer",
    "LRScheduler",
    "EvalHook",
    "BestCheckpointer",
    "EMAHook",
    "TrainingCurves",
]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Records each step's time as ``time`` and logs the total training time.

    The first ``warmup_iter`` steps are excluded from the reported speed.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total = time.perf_counter() - self._start_time
        hook_time = total - self._total_timer.seconds()
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and self._total_timer.seconds() > 0:
            speed = self._total_timer.seconds() / num_iter
            logger.info(
                f"Overall training speed: {num_iter} iterations in "
                f"{datetime.timedelta(seconds=int(self._total_timer.seconds()))} ({speed:.4f} s / it, "
                f"{1 / speed:.2f} it/s)"
            )
        logger.info(
            f"Total training time: {datetime.timedelta(seconds=int(total))} "
            f"({datetime.timedelta(seconds=int(hook_time))} on hooks)"
        )

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iter_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iter_done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class PeriodicWriter(HookBase):
    """Calls every writer each ``period`` iterations and at the end of training."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        for w in self._writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"PeriodicWriter needs EventWriter objects, got {type(w).__name__}")
        self._period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            writer.write()
            writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """Saves ``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end."""

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        self.step(self.trainer.iter)


class LRScheduler(HookBase):
    """Steps a per-iteration lr scheduler after each iteration and records the ``lr``.

    Args:
        optimizer: defaults to the trainer's optimizer.
        scheduler: a ``torch.optim.lr_scheduler.LRScheduler`` stepped once per iteration.
    """

    def __init__(self, optimizer=None, scheduler=None) -> None:
        self._optimizer = optimizer
        self.scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        self._best_group = self._largest_lr_group(self._optimizer)

    @staticmethod
    def _largest_lr_group(optimizer) -> int:
        """Index of the group whose lr is reported: the largest base lr, ties to the most parameters."""
        groups = optimizer.param_groups
        return max(range(len(groups)), key=lambda i: (groups[i]["lr"], len(groups[i]["params"])))

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_group]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        logger.info("Loading scheduler from state_dict ...")
        self.scheduler.load_state_dict(state)


class EvalHook(HookBase):
    """Runs ``eval_function`` every ``eval_period`` iterations and after training.

    The function returns a (nested) dict of numbers, e.g. ``{"bbox": {"AP": ...}}``;
    it is recorded in the event storage as ``bbox/AP`` etc.
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], dict], eval_after_train: bool = True) -> None:
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        results = self._func()
        if results:
            if not isinstance(results, dict):
                raise TypeError(f"Eval function must return a dict, got {type(results).__name__}")
            flat = flatten_results_dict(results)
            for k, v in flat.items():
                try:
                    flat[k] = float(v)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"Eval function returned a non-number for '{k}': {v!r}") from e
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        # Evaluation may take different times on different ranks; wait for all of them.
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._do_eval()

    def after_train(self) -> None:
        # Evaluate once more after a complete run (not after a crash).
        if self._eval_after_train and self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()
        del self._func  # may hold references to the model and data loader


class BestCheckpointer(HookBase):
    """Saves ``{file_prefix}.pth`` whenever the evaluation metric ``val_metric`` improves.

    Register it after :class:`EvalHook`. The best value survives a resume.

    Args:
        eval_period: the evaluation period (the hook looks at the metric at those iterations).
        checkpointer: a :class:`DetectionCheckpointer`.
        val_metric: e.g. ``"bbox/AP"``.
        mode: "max" or "min".
        file_prefix: file name without ``.pth``.
    """

    def __init__(self, eval_period, checkpointer, val_metric: str, mode: str = "max", file_prefix="model_best"):
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer mode must be 'max' or 'min', got '{mode}'")
        self._period = eval_period
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._mode = mode
        self._compare = operator.gt if mode == "max" else operator.lt
        self._file_prefix = file_prefix
        self.best_metric: float | None = None
        self.best_iter: int | None = None

    def _best_checking(self) -> None:
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            logger.warning(f"BestCheckpointer: metric '{self._val_metric}' was not found; no best model saved")
            return
        value, metric_iter = latest
        if math.isnan(value):
            logger.warning(f"BestCheckpointer: metric '{self._val_metric}' is NaN at iteration {metric_iter}")
            return
        if self.best_metric is None or self._compare(value, self.best_metric):
            previous = self.best_metric
            self.best_metric, self.best_iter = value, metric_iter
            # Not tagged as last_checkpoint: --resume continues from the latest training state.
            self._checkpointer.save(self._file_prefix, tag_last=False, iteration=metric_iter, best_metric=value)
            logger.info(
                f"Saved best model ({self._val_metric} = {value:.4f} at iteration {metric_iter}; "
                f"previous best {previous})"
            )

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._best_checking()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._best_checking()

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict) -> None:
        self.best_metric, self.best_iter = state["best_metric"], state["best_iter"]


class EMAHook(HookBase):
    """Updates an exponential moving average of the model after every step.

    The EMA weights are saved with the trainer state; evaluation can use them
    through ``ema.apply_to(model)``.
    """

    def __init__(self, ema: ModelEMA, model: torch.nn.Module) -> None:
        self.ema = ema
        self.model = model

    def after_step(self) -> None:
        self.ema.update(self.model)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)


class TrainingCurves(HookBase):
    """After training, draws ``metrics.json`` (loss terms, lr, AP) into ``training_curves.png`` next to it.

    Register it after the :class:`PeriodicWriter` that writes ``metrics.json`` (its final write happens in its
    ``after_train``). A failure to draw is logged, never raised: the run itself has finished.
    """

    def __init__(self, output_dir: str, metrics_file: str = "metrics.json", picture: str = "training_curves.png"):
        self.metrics_path = os.path.join(output_dir, metrics_file)
        self.picture_path = os.path.join(output_dir, picture)

    def after_train(self) -> None:
        from evaluation.visualizer import load_metrics, save_metrics_plot

        if not os.path.isfile(self.metrics_path):
            logger.warning(f"No {self.metrics_path} to draw training curves from")
            return
        title = os.path.basename(os.path.dirname(os.path.abspath(self.metrics_path)))
        try:
            save_metrics_plot(load_metrics(self.metrics_path), self.picture_path, title=title)
        except (ValueError, OSError) as e:
            logger.warning(f"Could not draw the training curves of {self.metrics_path}: {e}")
            return
        logger.info(f"Training curves (losses, lr, AP): {self.picture_path}")
