"""Command line, run setup and DDP wrapping shared by the tools (detectron2's ``engine.defaults``)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
from collections.abc import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from core import comm
from core.lazy import LazyConfig
from core.logger import setup_logger
from evaluation.coco_evaluation import RESULTS_FILE

from .data_setup import SPLITS, dataset_names, setup_datasets
from .events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

__all__ = [
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "create_ddp_model",
    "seed_all_rng",
    "collect_env_info",
    "resolve_seed",
    "load_config",
    "setup_config",
    "add_dataset_arguments",
    "dataset_from_args",
    "results_from_args",
]

logger = logging.getLogger(__name__)


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """detectron2's command line: config file, resume, eval-only, distributed flags and ``key=value`` overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n"
            "  python tools/train_net.py --config-file cfg.py train.max_iter=100\n"
            "  python tools/train_net.py --config-file cfg.py --num-gpus 2 dataloader.train.total_batch_size=8\n"
            "  python tools/train_net.py --config-file cfg.py --eval-only train.init_checkpoint=model_final.pth\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a LazyConfig .py or .yaml file")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in train.output_dir")
    parser.add_argument("--eval-only", action="store_true", help="evaluate train.init_checkpoint (or the last one)")
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="with --eval-only: fold the batch norms into the convolutions (and merge RepVGG branches) before "
        "evaluating; faster, the same results up to float rounding (never applied to a model that trains)",
    )
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine (GPUs; CPU workers without CUDA)"
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="rendezvous URL of the process group, e.g. tcp://127.0.0.1:29500 ('auto': a free local port)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides 'path.key=value' (hydra grammar; '+new.key=value' adds a key, '~key' deletes one)",
    )
    return parser


def load_config(config_file: str, opts: Sequence[str] = ()) -> DictConfig:
    """A LazyConfig file (``.py`` or a run's ``config.yaml``) with ``key=value`` overrides applied.

    A ``--`` separator among ``opts`` is ignored.

    Raises:
        FileNotFoundError: no such config file.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = LazyConfig.load(config_file)
    opts = [o for o in opts if o != "--"]
    return LazyConfig.apply_overrides(cfg, opts) if opts else cfg


def setup_config(config_file: str, opts: Sequence[str] = (), splits: tuple[str, ...] = SPLITS) -> DictConfig:
    """A config as ``tools/train_net.py`` runs it, for scripts: loaded, overridden, its datasets registered.

    Args:
        config_file: a LazyConfig ``.py`` file or a run's ``config.yaml``.
        opts: ``key=value`` overrides.
        splits: the loaders whose datasets are registered and checked against ``model.num_classes``.
    """
    cfg = load_config(config_file, opts)
    setup_datasets(cfg, splits)
    return cfg


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """``--config-file`` / ``--dataset`` and trailing ``key=value`` overrides, for scripts that read a dataset.

    With ``--config-file`` (a ``.py`` config or a run's ``config.yaml``) the script sees the data as training
    saw it: the config's own datasets are registered, and the dataset is ``dataloader.<split>.dataset.names``
    unless ``--dataset`` names another one.
    """
    parser.add_argument("--config-file", help=f"LazyConfig or a run's config.yaml; its {split} dataset is used")
    parser.add_argument("--dataset", help=f"registered dataset name (default with --config-file: its {split} data)")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides key=value (with --config-file)"
    )


def dataset_from_args(args: argparse.Namespace, split: str) -> tuple[str, DictConfig | None]:
    """The dataset name chosen by :func:`add_dataset_arguments`' options, and the loaded config (or None).

    Raises:
        ValueError: neither option is given, overrides come without a config, or the config names no dataset.
    """
    opts = [o for o in (args.opts or []) if o != "--"]
    if not args.config_file:
        if opts:
            raise ValueError(f"config overrides {opts} need --config-file")
        if not args.dataset:
            raise ValueError("give --dataset NAME or --config-file CONFIG (its dataset is used)")
        return args.dataset, None
    cfg = setup_config(args.config_file, opts, splits=(split,))
    if args.dataset:
        return args.dataset, cfg
    names = dataset_names(cfg, split)
    if not names:
        raise ValueError(f"{args.config_file} has no dataloader.{split}.dataset.names; give --dataset NAME")
    return names[0], cfg


def results_from_args(args: argparse.Namespace, cfg: DictConfig | None) -> str:
    """``args.results``, or else the evaluator's results file in the run folder (``train.output_dir``) of ``cfg``.

    Raises:
        ValueError: neither is given. FileNotFoundError: the run has no results file.
    """
    if getattr(args, "results", None):
        return args.results
    if cfg is None:
        raise ValueError("give --results (or --config-file of the run, whose results file is then used)")
    path = os.path.join(cfg.train.output_dir, RESULTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (the run's evaluation writes it); give --results")
    return path


def seed_all_rng(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_seed(seed: int | None) -> int:
    """The run's seed: the configured one, or (seed < 0 / None) a random one agreed on by every rank."""
    if seed is None or seed < 0:
        seed = comm.shared_random_seed()
        logger.info(f"Using a random seed: {seed} (set train.seed to reproduce this run)")
    return int(seed)


def collect_env_info() -> str:
    """A short environment summary for the log."""
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("platform", platform.platform()),
        ("numpy", np.__version__),
        ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("CUDA available", torch.cuda.is_available()),
        ("CPU threads", torch.get_num_threads()),
    ]
    try:
        import torchvision

        rows.append(("torchvision", torchvision.__version__))
    except ImportError:
        rows.append(("torchvision", "not found"))
    for mod in ("fvcore", "omegaconf", "hydra", "pycocotools"):
        try:
            rows.append((mod, getattr(__import__(mod), "__version__", "unknown")))
        except ImportError:
            rows.append((mod, "not found"))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
        rows.append(("CUDA (torch)", torch.version.cuda))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def default_setup(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Creates the output directory, sets up logging, logs the environment, registers the config's own datasets
    and completes ``model.num_classes`` from them (:func:`~engine.data_setup.setup_datasets`), logs the config
    as Python code (``LazyConfig.to_py``), saves ``config.yaml`` (and ``config.yaml.pkl`` when a value cannot be
    written to yaml; the saved config is the one that runs), seeds.

    Returns:
        the run's seed (resolved from ``train.seed``, drawn at random when negative).
    """
    output_dir = cfg.train.output_dir
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    setup_logger(output_dir, distributed_rank=rank)
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Environment info:\n" + collect_env_info())
    logger.info(f"Command line arguments: {args}")
    if getattr(args, "config_file", ""):
        with open(args.config_file) as f:
            logger.info(f"Contents of args.config_file={args.config_file}:\n{f.read()}")
    setup_datasets(cfg, ("test",) if getattr(args, "eval_only", False) else SPLITS)
    logger.info(f"Full config (interpolations resolved):\n{LazyConfig.to_py(cfg)}")
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        LazyConfig.save(cfg, path)  # plus config.yaml.pkl when a value cannot be written to yaml
        logger.info(f"Full config saved to {path}")
    if comm.get_local_size() > 1 and not torch.cuda.is_available():
        # CPU workers of one machine share its cores; without this each would start one thread per core.
        threads = max(1, (os.cpu_count() or 1) // comm.get_local_size())
        torch.set_num_threads(threads)
        logger.info(f"{comm.get_local_size()} CPU processes on this machine: {threads} torch thread(s) each")
    seed = resolve_seed(cfg.train.get("seed", -1))
    seed_all_rng(seed + rank)
    if cfg.train.get("cudnn_benchmark", False):
        torch.backends.cudnn.benchmark = True
    return seed


def default_writers(output_dir: str, max_iter: int | None = None) -> list:
    """Console printer, ``metrics.json`` and TensorBoard writers (main process)."""
    os.makedirs(output_dir, exist_ok=True)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs) -> torch.nn.Module:
    """Wraps ``model`` in DistributedDataParallel when the world has several ranks.

    Args:
        fp16_compression: compress gradients to fp16 for the all-reduce (GPU).
        kwargs: DistributedDataParallel arguments (e.g. ``find_unused_parameters``, ``broadcast_buffers``).
    """
    if comm.get_world_size() == 1:
        return model
    if isinstance(kwargs, DictConfig):
        kwargs = OmegaConf.to_container(kwargs)
    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = torch.nn.parallel.DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return ddp
