#!/usr/bin/env bash
# Collects, into ./.whl (or $1), the wheels of the packages this project needs that a bare GPU image with its own
# torch, torchvision and Triton may lack (omegaconf, hydra-core, fvcore, iopath, pycocotools and what they need),
# for CPython ${PY_VERSION:-3.12} on x86-64 Linux. scripts/gpu_check.sh installs them from there
# (pip install --no-index --no-deps --target ...). Needs a package index (run it where pip works).
#
# Pure-Python packages that PyPI ships only as source (antlr4-python3-runtime 4.9.3, fvcore, iopath) are built into
# py3-none-any wheels here; pycocotools is downloaded as a binary wheel for the target Python.
set -euo pipefail
DEST=${1:-.whl}
PY_VERSION=${PY_VERSION:-3.12}
PIP=${PIP:-.venv/bin/pip}
mkdir -p "$DEST"
PURE=(
    "omegaconf==2.3.1" "antlr4-python3-runtime==4.9.3" "hydra-core==1.3.8" "fvcore==0.1.5.post20221221"
    "iopath==0.1.10" "yacs==0.1.8" "termcolor==3.3.0"
)
"$PIP" wheel -q --no-deps -w "$DEST" "${PURE[@]}"
"$PIP" download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "pycocotools==2.0.11"
ls -l "$DEST"
