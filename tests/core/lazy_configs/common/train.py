import tests.core.lazy_configs.targets as _targets

_targets.LOAD_COUNTS["common/train.py"] += 1

train = dict(
    max_iter=100,
    output_dir="./output",
    init_checkpoint=None,
    log_period=20,
    eval_period=0.5,
    amp=dict(enabled=False),
)
