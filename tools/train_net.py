#!/usr/bin/env python
"""Train and evaluate a detector from a LazyConfig, detrex style.

    python tools/train_net.py --config-file CFG.py [--resume] [--eval-only] [--num-gpus N] [key=value ...]

Reads the detrex keys (``train.*``, ``model``, ``optimizer``, ``lr_multiplier``,
``dataloader.{train,test,evaluator}``); see ``configs/common/train.py``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from engine import comm, hooks  # noqa: E402
from engine.checkpoint import DetectionCheckpointer  # noqa: E402
from engine.defaults import create_ddp_model, default_argument_parser, default_setup, default_writers  # noqa: E402
from engine.ema import ModelEMA  # noqa: E402
from engine.launch import launch  # noqa: E402
from engine.lazy import LazyConfig, instantiate, locate  # noqa: E402
from engine.solver import LRMultiplier, iterations_from_epochs  # noqa: E402
from engine.train_loop import AMPTrainer, HookBase, SimpleTrainer  # noqa: E402
from evaluation import inference_on_dataset, print_csv_format  # noqa: E402

logger = logging.getLogger("train_net")


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device: "auto" picks CUDA when available; a missing CUDA is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device='{name}' but CUDA is not available; use train.device=cpu")
        if device.index is None:
            device = torch.device("cuda", comm.get_local_rank())
    return device


def do_test(cfg, model, ema: ModelEMA | None = None):
    """Runs the test loader through the evaluator; returns the results dict (empty without an evaluator)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    if _accepts(cfg.dataloader.evaluator, "output_dir") and cfg.dataloader.evaluator.get("output_dir") is None:
        cfg.dataloader.evaluator.output_dir = cfg.train.output_dir  # coco_instances_results.json goes there
    evaluator = instantiate(cfg.dataloader.evaluator)
    loader = instantiate(cfg.dataloader.test)
    if ema is not None:
        logger.info("Evaluating with the EMA weights")
        with ema.apply_to(model):
            results = inference_on_dataset(model, loader, evaluator)
    else:
        results = inference_on_dataset(model, loader, evaluator)
    print_csv_format(results)
    return results


def resolve_schedule(cfg, train_loader) -> int:
    """Sets ``train.max_iter`` from ``train.epochs`` when given, and scales the lr to the batch size if asked."""
    total_batch = train_loader.total_batch_size
    ref = cfg.train.get("lr_reference_batch_size")
    if ref:
        scale = total_batch / ref
        new_lr = cfg.optimizer.lr * scale
        logger.info(
            f"Linear lr scaling: optimizer.lr {cfg.optimizer.lr:g} is for a total batch of {ref}; "
            f"total batch is {total_batch}, so lr = {new_lr:g} (x{scale:g})"
        )
        cfg.optimizer.lr = new_lr
    if cfg.train.get("epochs"):
        max_iter, per_epoch = iterations_from_epochs(cfg.train.epochs, train_loader.dataset_size, total_batch)
        logger.info(
            f"Schedule in epochs: {cfg.train.epochs} epochs x {per_epoch} iterations/epoch "
            f"({train_loader.dataset_size} images / total batch {total_batch}) = {max_iter} iterations "
            "(train.max_iter is set to this)"
        )
        cfg.train.max_iter = max_iter
    return int(cfg.train.max_iter)


def build_hooks(cfg, trainer, model, optimizer, checkpointer, max_iter, ema):
    """The hooks of a detrex run, in their call order."""
    main = comm.is_main_process()
    eval_ema = ema if ema is not None and cfg.train.model_ema.use_ema_weights_for_eval else None
    test = functools.partial(do_test, cfg, model, eval_ema)
    best = cfg.train.get("best_checkpointer", {})
    return [
        hooks.IterationTimer(),
        hooks.EMAHook(ema, model) if ema else None,
        hooks.LRScheduler(scheduler=LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), max_iter)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        hooks.EvalHook(cfg.train.eval_period, test),
        hooks.BestCheckpointer(cfg.train.eval_period, checkpointer, best.val_metric, best.mode)
        if main and best.get("enabled", False) and "evaluator" in cfg.dataloader
        else None,
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, max_iter), period=cfg.train.log_period)
        if main
        else None,
    ]


def build_config_hooks(cfg) -> list[HookBase]:
    """The hooks of ``train.hooks``, in order: ``LazyCall(hook class)(...)`` configs, instantiated on every rank.

    A hook whose ``output_dir`` argument is unset gets ``train.output_dir``. They are registered after the default
    hooks (so they see a step after the writers, and evaluation results of the same iteration).
    """
    built = []
    for i, hook_cfg in enumerate(cfg.train.get("hooks") or []):
        key = f"train.hooks[{i}]"
        if not (isinstance(hook_cfg, DictConfig) and "_target_" in hook_cfg):
            raise TypeError(f"{key} must be a LazyCall(...) config of a training hook, got {hook_cfg!r}")
        if _accepts(hook_cfg, "output_dir") and hook_cfg.get("output_dir") is None:
            hook_cfg.output_dir = cfg.train.output_dir
        hook = instantiate(hook_cfg)
        if not isinstance(hook, HookBase):
            raise TypeError(f"{key} must build a hook (a HookBase subclass), got {type(hook).__name__}")
        built.append(hook)
    return built


def _accepts(lazy_call, argument: str) -> bool:
    """Whether the target of a LazyCall takes ``argument``."""
    target = lazy_call._target_
    if isinstance(target, str):
        target = locate(target)
    return argument in inspect.signature(target).parameters


def do_train(args, cfg, seed: int):
    device = resolve_device(cfg.train.device)
    model = instantiate(cfg.model).to(device)
    logger.info(f"Model:\n{model}")
    if _accepts(cfg.dataloader.train, "seed") and cfg.dataloader.train.get("seed") is None:
        cfg.dataloader.train.seed = seed  # data order and augmentation follow the run's seed
    train_loader = instantiate(cfg.dataloader.train)
    max_iter = resolve_schedule(cfg, train_loader)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    ema = (
        ModelEMA(model, cfg.train.model_ema.decay, cfg.train.model_ema.warmup) if cfg.train.model_ema.enabled else None
    )
    ddp_cfg = OmegaConf.to_container(cfg.train.ddp, resolve=True)
    fp16_compression = ddp_cfg.pop("fp16_compression", False)
    model = create_ddp_model(model, fp16_compression=fp16_compression, **ddp_cfg)
    trainer_cls = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_cls(
        model,
        train_loader,
        optimizer,
        clip_grad_params=cfg.train.clip_grad.params if cfg.train.clip_grad.enabled else None,
        seed=seed,
    )
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(build_hooks(cfg, trainer, model, optimizer, checkpointer, max_iter, ema))
    trainer.register_hooks(build_config_hooks(cfg))  # before the resume: their state_dict is restored too
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    if start_iter >= max_iter:
        logger.info(f"Nothing to train: the checkpoint is at iteration {start_iter}, train.max_iter is {max_iter}")
        return model
    trainer.train(start_iter, max_iter)
    return model


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts or [])
    seed = default_setup(cfg, args)
    if args.eval_only:
        device = resolve_device(cfg.train.device)
        model = instantiate(cfg.model).to(device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model, cfg.train.output_dir).resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return do_test(cfg, model)
    return do_train(args, cfg, seed)


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
