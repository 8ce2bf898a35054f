"""Iteration-based training loop with hooks (detectron2's ``TrainerBase``/``SimpleTrainer``/``AMPTrainer``)."""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from core import comm
from core.device import autocast, default_amp_dtype

from .events import EventStorage, get_event_storage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer", "seed_iteration"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; each method is called by the trainer at the named moment.

    ``self.trainer`` is set (as a weak proxy) when the hook is registered.
    """

    trainer: TrainerBase

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_backward(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict:
        """State that must survive a resume (empty for stateless hooks)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - optional override
        pass


class TrainerBase:
    """Runs ``run_step`` from ``start_iter`` to ``max_iter`` inside an :class:`EventStorage`, calling hooks.

    Attributes:
        iter: the current iteration; after training, equal to ``max_iter``.
        start_iter: the iteration training started (or resumed) from.
        max_iter: the iteration to end training at (exclusive).
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Registers hooks in the order they will be called; ``None`` entries are ignored."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"Hooks must derive from HookBase, got {type(h).__name__}")
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    @property
    def hooks(self) -> list[HookBase]:
        return list(self._hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # After a full run, ``iter`` is max_iter (like a for loop's counter past the end).
                self.iter += 1
            except Exception:
                logger.exception(f"Exception during training at iteration {self.iter}:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()
        self.storage.step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        hooks_state = {}
        for h in self._hooks:
            state = h.state_dict()
            if state:
                hooks_state[type(h).__qualname__] = state
        return {"iteration": self.iter, "hooks": hooks_state}

    def load_state_dict(self, state: dict) -> None:
        self.iter = state["iteration"]
        for key, value in state.get("hooks", {}).items():
            matching = [h for h in self._hooks if type(h).__qualname__ == key]
            if not matching:
                logger.warning(f"Checkpoint has state for hook '{key}', which this trainer does not have")
            for h in matching:
                h.load_state_dict(value)


def seed_iteration(seed: int, iteration: int, rank: int) -> None:
    """Seeds python, numpy and torch RNGs from (seed, iteration, rank).

    Re-seeding at every step makes the model's own randomness (dropout, denoising
    noise) a function of the iteration, so a resumed run continues exactly like an
    uninterrupted one without storing RNG states of every rank.
    """
    step_seed = int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])
    random.seed(step_seed)
    np.random.seed(step_seed)
    torch.manual_seed(step_seed)


class SimpleTrainer(TrainerBase):
    """One optimizer step per iteration on one batch: forward, sum losses, backward, clip, step.

    Args:
        model: returns a dict of (weighted) loss tensors in training mode.
        data_loader: iterable of batches; if it has ``set_start_iter(it)``, it is told where
            training starts so a resumed run sees the batches an uninterrupted run would.
        optimizer: a torch optimizer.
        clip_grad_params: kwargs of ``torch.nn.utils.clip_grad_norm_`` (``max_norm``, ``norm_type``),
            or None for no clipping.
        seed: if not None, RNGs are re-seeded from (seed, iteration, rank) before each step.
        gather_metric_period: gather and record losses every this many iterations.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        clip_grad_params: Mapping | None = None,
        seed: int | None = None,
        gather_metric_period: int = 1,
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.clip_grad_params = dict(clip_grad_params) if clip_grad_params else None
        self.seed = seed
        self.gather_metric_period = gather_metric_period

    @property
    def _data_loader_iter(self):
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def train(self, start_iter: int, max_iter: int) -> None:
        if hasattr(self.data_loader, "set_start_iter"):
            self.data_loader.set_start_iter(start_iter)
        self._data_loader_iter_obj = None
        super().train(start_iter, max_iter)

    def run_step(self) -> None:
        assert self.model.training, "the model was left in eval mode"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.seed is not None:
            seed_iteration(self.seed, self.iter, comm.get_rank())
        loss_dict, losses = self._forward(data)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(losses)
        self.after_backward()
        self._step()
        if (self.iter + 1) % self.gather_metric_period == 0:
            self._write_metrics(loss_dict, data_time)

    def _forward(self, data) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(f"In training the model must return a non-empty dict of losses, got {type(loss_dict)}")
        return loss_dict, sum(loss_dict.values())

    def _backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def _step(self) -> None:
        self._clip_grads()
        self.optimizer.step()

    def _clip_grads(self) -> float | None:
        if not self.clip_grad_params:
            return None
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return None
        return float(torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_params))

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = "") -> None:
        metrics = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
        metrics["data_time"] = data_time
        all_metrics = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics))
        means = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
        total = sum(means.values())
        if not np.isfinite(total):
            raise FloatingPointError(f"Loss became infinite or NaN at iteration={self.iter}!\nloss_dict = {means}")
        storage.put_scalar(f"{prefix}total_loss", total)
        if len(means) > 1:
            storage.put_scalars(**{f"{prefix}{k}": v for k, v in means.items()})

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        state["seed"] = self.seed
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("seed") is not None and self.seed is not None and state["seed"] != self.seed:
            logger.warning(
                f"Resuming with seed {self.seed}, but the checkpoint was trained with seed {state['seed']}: "
                "using the checkpoint's seed so the run continues as it would have"
            )
        if state.get("seed") is not None:
            self.seed = state["seed"]


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` under ``torch.autocast`` with a ``GradScaler`` (saved in checkpoints).

    Args:
        amp_dtype: autocast dtype; default float16 on CUDA and bfloat16 on CPU.
        grad_scaler: a ``torch.amp.GradScaler``; by default one is created, enabled only for float16.
        Other arguments as in :class:`SimpleTrainer`.
    """

    def __init__(self, model, data_loader, optimizer, amp_dtype: torch.dtype | None = None, grad_scaler=None, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        device = next(model.parameters()).device
        self.device_type = device.type
        self.amp_dtype = amp_dtype or default_amp_dtype(device)
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.grad_scaler = grad_scaler

    def _forward(self, data):
        with autocast(self.device_type, dtype=self.amp_dtype):
            loss_dict, losses = super()._forward(data)
        return loss_dict, losses

    def _backward(self, losses: torch.Tensor) -> None:
        self.grad_scaler.scale(losses).backward()

    def _step(self) -> None:
        if self.clip_grad_params:
            self.grad_scaler.unscale_(self.optimizer)
        self._clip_grads()
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
