# Training defaults read by tools/train_net.py (the detrex keys, plus a few of this project's).
train = dict(
    output_dir="./output",
    # A full-model checkpoint to start from ('' for none); backbone weights are set in the model config.
    init_checkpoint="",
    max_iter=90000,
    # If set, max_iter = epochs * ceil(dataset_size / total_batch_size), computed and logged at start.
    epochs=None,
    # If set, optimizer.lr is scaled by total_batch_size / lr_reference_batch_size (linear scaling rule).
    lr_reference_batch_size=None,
    amp=dict(enabled=False),  # float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    clip_grad=dict(enabled=False, params=dict(max_norm=0.1, norm_type=2)),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    # Keeps model_best.pth by this metric after each evaluation.
    best_checkpointer=dict(enabled=True, val_metric="bbox/AP", mode="max"),
    model_ema=dict(enabled=False, decay=0.9998, warmup=2000, use_ema_weights_for_eval=True),
    device="auto",  # "cuda", "cpu", or "auto" (cuda when available)
    # None: every module runs the kernel backend its config gives; a backend name (e.g. "triton" on a GPU, "pytorch"
    # for the reference kernels) switches every module that has a kernel of that name (modeling.layers.switches).
    kernels=None,
    # >= 0: reproducible data order, augmentation and model randomness, exact resume; < 0: random.
    seed=42,
    cudnn_benchmark=False,
    # Extra hooks: LazyCall(HookBase subclass)(...) configs, instantiated by tools/train_net.py and registered after
    # the default hooks (detectron2's trainer.register_hooks). An unset output_dir argument gets train.output_dir.
    hooks=[],
)
