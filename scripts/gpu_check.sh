#!/usr/bin/env bash
# GPU smoke check, run from the repository root on a CUDA machine; every step's output goes to $OUT (default
# ./gpu_check_out), one log per step, and one line per step (exit status, seconds) to $OUT/summary.txt.
#
#   1. env       torch / Triton / GPU versions
#   2. parity    the parity tests on CUDA (config kernels, reference kernels, Triton kernels) for the fixture set in
#                $PARITY_FIXTURES (one model directory at a time fits a transfer: PARITY_MODEL=salience|relation)
#   3. kernels   deformable sampling alone at Salience DETR R50 shapes (800x1333, 900 queries): pytorch, gather,
#                triton; forward and forward+backward; fp32 and fp16 values (scripts/benchmark_speed.py)
#   4. relation  the relation bias alone, 900 + 200 queries, batch 2: direct, fused, triton; peak memory and time
#   5. models    Salience DETR and Relation DETR R50, inference (batch 1, 800x1333) and a train step (batch 2,
#                800x1333): reference kernels, config kernels, Triton kernels, fp32 and fp16 autocast
#   6. amp       100 fp16-AMP iterations (GradScaler) of each synthetic config with the Triton kernels, evaluated
#
# Missing Python packages (omegaconf, hydra-core, fvcore, iopath, pycocotools, ... on a bare image) are installed
# from the wheels in .whl/ when that folder exists (scripts/gpu_wheels.sh collects them where pip works). Steps run on after a failure; the script exits non-zero if any
# step failed.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
failed=0

step() {  # step NAME COMMAND...: runs COMMAND with its output in $OUT/NAME.log
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc, $(($(date +%s) - start)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failed=1
}

step env "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__);
print(torch.cuda.get_device_name(), 'CUDA', torch.version.cuda)"

if [ -n "${PARITY_FIXTURES:-}" ]; then
    PARITY_DEVICE=cuda step parity "$PY" -m pytest -q -p no:cacheprovider \
        "tests/projects/test_${PARITY_MODEL:-salience}_detr_parity.py"
fi

step kernels "$PY" scripts/benchmark_speed.py --device cuda --modes kernels --reps 10 --json "$OUT/kernels.json"

step relation "$PY" projects/lp_detr/tools/benchmark_relation_memory.py --device cuda --batch-size 2 \
    --variants direct fused triton --repeats 5

step models "$PY" scripts/benchmark_speed.py --device cuda --models salience relation --modes inference train \
    --train-size 800 1333 --reps 5

amp() {
    local config
    for config in projects/salience_detr/configs/salience_detr_r18_synthetic.py \
        projects/lp_detr/configs/relation_detr_r18_synthetic.py projects/lp_detr/configs/lp_detr_r18_synthetic.py \
        projects/salience_lp_detr/configs/salience_lp_detr_r18_synthetic.py; do
        echo "== $config"
        "$PY" tools/train_net.py --config-file "$config" train.device=cuda train.amp.enabled=True train.kernels=triton \
            train.max_iter=100 train.eval_period=100 train.checkpointer.period=1000 train.log_period=20 \
            "train.output_dir=/tmp/gpu_check/$(basename "$config" .py)" || return 1
    done
}
step amp amp

exit "$failed"
