"""Shared pieces of the train_net tests; importable by spawned DDP workers (``tests.tools.train_net_helpers``)."""

import os

import torch

from core import comm
from data.synthetic import register_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "tests", "configs", "centernet_lite_synthetic.py")


def register_tiny(root: str, prefix: str) -> tuple[str, str]:
    """A small synthetic dataset (12 train / 6 val images) under ``root``, registered as ``{prefix}_train/val``."""
    from data import DatasetCatalog

    if f"{prefix}_train" not in DatasetCatalog:
        register_synthetic(root, name_prefix=prefix, num_train=12, num_val=6, seed=1)
    return f"{prefix}_train", f"{prefix}_val"


def tiny_opts(output_dir: str, names: tuple[str, str], max_iter: int, crop: bool = True, **extra) -> list[str]:
    """Overrides that make a synthetic config train in seconds: small images, batch 2, short schedule.

    ``crop=False`` turns the crop branch of the training augmentation off instead of shrinking it.
    """
    train_name, val_name = names
    opts = {
        "train.output_dir": output_dir,
        "train.max_iter": max_iter,
        "train.log_period": 1,
        "train.eval_period": 0,
        "train.checkpointer.period": 1000,
        "lr_multiplier.warmup_iters": 2,
        "dataloader.train.dataset.names": train_name,
        "dataloader.test.dataset.names": val_name,
        "dataloader.train.total_batch_size": 2,
        "dataloader.train.num_workers": 0,
        "dataloader.test.num_workers": 0,
        "dataloader.train.mapper.augmentation.1.short_edge_length": "[128,160]",
        "dataloader.train.mapper.augmentation.1.max_size": 224,
        "dataloader.test.mapper.augmentation.0.short_edge_length": 128,
        "dataloader.test.mapper.augmentation.0.max_size": 224,
    }
    if crop:
        opts.update(
            {
                "dataloader.train.mapper.augmentation_with_crop.1.short_edge_length": "[160]",
                "dataloader.train.mapper.augmentation_with_crop.2.crop_size": "[96,128]",
                "dataloader.train.mapper.augmentation_with_crop.3.short_edge_length": "[128,160]",
                "dataloader.train.mapper.augmentation_with_crop.3.max_size": 224,
            }
        )
    else:
        opts["dataloader.train.mapper.augmentation_with_crop"] = "null"
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def ddp_worker(data_root: str, prefix: str, output_dir: str, result_file: str) -> None:
    """Runs in each of the DDP processes: trains a few iterations, then checks the replicas agree."""
    from engine.defaults import default_argument_parser
    from tools import train_net

    torch.set_num_threads(1)
    names = register_tiny(data_root, prefix)
    opts = tiny_opts(output_dir, names, max_iter=4, **{"dataloader.train.total_batch_size": 4})
    args = default_argument_parser().parse_args(["--config-file", CONFIG, *opts, "~dataloader.evaluator"])
    model = train_net.main(args)
    params = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    gathered = comm.all_gather(params)
    grads_seen = comm.all_gather(sum(int(p.grad is not None) for p in model.module.parameters()))
    if comm.is_main_process():
        torch.save(
            {
                "world_size": comm.get_world_size(),
                "max_abs_diff": float((gathered[0] - gathered[1]).abs().max()),
                "grads_seen": grads_seen,
                "params": {k: v.detach().clone() for k, v in model.module.named_parameters()},
            },
            result_file,
        )
