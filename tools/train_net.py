#!/usr/bin/env python
"""Train and evaluate a detector from a LazyConfig, detrex style.

    python tools/train_net.py --config-file CFG.py [--resume] [--eval-only [--fuse]] [--num-gpus N] [key=value ...]

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

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from core import comm  # noqa: E402
from core.device import autocast, resolve_device  # noqa: E402
from core.lazy import LazyConfig, instantiate, locate  # noqa: E402
from engine import hooks  # noqa: E402
from engine.checkpoint import EVAL_WEIGHTS_KEY, DetectionCheckpointer  # noqa: E402
from engine.data_setup import dataset_categories  # noqa: E402
from engine.defaults import create_ddp_model, default_argument_parser, default_setup, default_writers  # noqa: E402
from engine.ema import ModelEMA  # noqa: E402
from engine.launch import launch  # noqa: E402
from engine.predictor import fuse_for_inference  # noqa: E402
from engine.solver import LRMultiplier, iterations_from_epochs  # noqa: E402
from engine.train_loop import AMPTrainer, HookBase, SimpleTrainer  # noqa: E402
from evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from modeling.layers import select_kernel_backend  # noqa: E402

logger = logging.getLogger("train_net")


def build_test_loader(cfg):
    """The test loader, or None without an evaluator. Building it loads (and checks) the test images."""
    if "evaluator" not in cfg.dataloader:
        return None
    return instantiate(cfg.dataloader.test)


def do_test(cfg, model, ema: ModelEMA | None = None, loader=None):
    """Runs the test loader through the evaluator; returns the results dict (empty without an evaluator).

    ``loader`` is the test loader built once before training (built here when None).
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    if _accepts(cfg.dataloader.evaluator, "output_dir") and cfg.dataloader.evaluator.get("output_dir") is None:
        cfg.dataloader.evaluator.output_dir = cfg.train.output_dir  # coco_instances_results.json goes there
    evaluator = instantiate(cfg.dataloader.evaluator)
    loader = loader if loader is not None else build_test_loader(cfg)
    # train.amp.enabled: inference under the same autocast as training (bfloat16 on a CPU)
    with autocast(next(model.parameters()).device, enabled=bool(cfg.train.amp.enabled)):
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


def build_lr_multiplier(cfg, max_iter: int):
    """``lr_multiplier``, checked against the run's length (errors name the config keys)."""
    multiplier = instantiate(cfg.lr_multiplier)
    warmup = getattr(multiplier, "warmup_iters", None)
    if warmup is not None and warmup >= max_iter:
        length = "train.epochs converted to iterations" if cfg.train.get("epochs") else "train.max_iter"
        raise ValueError(
            f"lr_multiplier.warmup_iters={warmup} must be smaller than the run's {max_iter} iterations "
            f"({length}); lower lr_multiplier.warmup_iters (e.g. lr_multiplier.warmup_iters={max_iter // 10}) "
            "or train longer"
        )
    return multiplier


def build_hooks(cfg, model, optimizer, checkpointer, max_iter, ema, multiplier, test_loader=None):
    """The hooks of a detrex run, in their call order."""
    main = comm.is_main_process()
    eval_ema = ema if ema is not None and cfg.train.model_ema.use_ema_weights_for_eval else None
    test = functools.partial(do_test, cfg, model, eval_ema, test_loader)
    best = cfg.train.get("best_checkpointer", {})
    return [
        hooks.IterationTimer(),
        hooks.EMAHook(ema, model) if ema else None,
        hooks.LRScheduler(scheduler=LRMultiplier(optimizer, multiplier, max_iter)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        hooks.EvalHook(cfg.train.eval_period, test),
        hooks.BestCheckpointer(cfg.train.eval_period, checkpointer, best.val_metric, best.mode)
        if main and best.get("enabled", False) and "evaluator" in cfg.dataloader
        else None,
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, max_iter), period=cfg.train.log_period)
        if main
        else None,
        hooks.TrainingCurves(cfg.train.output_dir) if main and cfg.train.output_dir else None,
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


def select_kernels(cfg, model, device) -> None:
    """``train.kernels``: switches every module that has a kernel backend of that name (``None``: the config's)."""
    name = cfg.train.get("kernels")
    if not name:
        return
    if name == "triton":
        from modeling.layers.triton_support import require_triton_device

        require_triton_device("train.kernels='triton' (the Triton kernel backend)", device)
    switched = select_kernel_backend(model, name)
    kinds = sorted({type(m).__name__ for m in switched})
    logger.info(f"train.kernels={name!r}: {len(switched)} modules ({', '.join(kinds)}) run the {name!r} kernels")


def do_train(args, cfg, seed: int):
    """Builds the data first (its images are checked before anything else), then the model, and trains."""
    device = resolve_device(cfg.train.device, comm.get_local_rank())
    if _accepts(cfg.dataloader.train, "seed") and cfg.dataloader.train.get("seed") is None:
        cfg.dataloader.train.seed = seed  # data order and augmentation follow the run's seed
    train_loader = instantiate(cfg.dataloader.train)
    test_loader = build_test_loader(cfg)
    max_iter = resolve_schedule(cfg, train_loader)
    multiplier = build_lr_multiplier(cfg, max_iter)
    model = instantiate(cfg.model).to(device)
    select_kernels(cfg, model, device)
    logger.info(f"Model:\n{model}")
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
    checkpointer.extra_state["metadata"] = dataset_categories(cfg, "train")  # class names travel with it
    if ema is not None and cfg.train.model_ema.use_ema_weights_for_eval:
        # inference from these checkpoints (--eval-only, demo.py, the predictor) then uses the evaluated weights
        checkpointer.extra_state[EVAL_WEIGHTS_KEY] = "ema"
    trainer.register_hooks(build_hooks(cfg, model, optimizer, checkpointer, max_iter, ema, multiplier, test_loader))
    trainer.register_hooks(build_config_hooks(cfg))  # before the resume: their state_dict is restored too
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume, mode="finetune")
    start_iter = trainer.iter + 1 if checkpointer.resumed_from else 0
    if start_iter >= max_iter:
        logger.info(f"Nothing to train: the checkpoint is at iteration {start_iter}, train.max_iter is {max_iter}")
        return model
    trainer.train(start_iter, max_iter)
    return model


def do_eval_only(args, cfg):
    """Evaluates ``train.init_checkpoint`` (or the last checkpoint with ``--resume``), which must fit the model.

    With ``--fuse`` the loaded model is fused for inference (``engine.predictor.fuse_for_inference``) before it is
    wrapped for distributed evaluation.
    """
    if not args.resume and not cfg.train.init_checkpoint:
        raise ValueError("--eval-only needs a checkpoint: set train.init_checkpoint=PATH (or --resume)")
    device = resolve_device(cfg.train.device, comm.get_local_rank())
    test_loader = build_test_loader(cfg)
    if OmegaConf.select(cfg, "model.backbone.weights", default=None) is not None:
        cfg.model.backbone.weights = None  # the checkpoint holds the backbone: no pretrained download
    model = instantiate(cfg.model).to(device)
    select_kernels(cfg, model, device)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume, mode="eval")
    if getattr(args, "fuse", False):
        fuse_for_inference(model.eval())
    return do_test(cfg, create_ddp_model(model), loader=test_loader)


def main(args):
    if getattr(args, "fuse", False) and not args.eval_only:
        raise ValueError("--fuse is for --eval-only: a model that will be trained is never fused")
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts or [])
    seed = default_setup(cfg, args)
    if args.eval_only:
        return do_eval_only(args, cfg)
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
