#!/usr/bin/env bash
# Download every wheel a CUDA machine needs for benchmarks/gpu_check.py into wheels/gpu/ (see its
# docstring for the install steps there). Run on a machine with internet, from the repository root.
# wheels/gpu/ holds several GB (torch's CUDA libraries): carry it, never commit it.
set -euo pipefail
target=${1:-wheels/gpu}
python=${PYTHON:-python3.11}
platform=(--only-binary=:all: --python-version 3.11 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p "$target"
# The project's pins, with their dependencies: PyPI's torch==2.13.0 for Linux is the CUDA build.
"$python" -m pip download "${platform[@]}" -d "$target" -r requirements/lock.txt
# TorchRec and the CUDA build of fbgemm-gpu of the CPU pins' version (requirements/lock-nodeps.txt).
"$python" -m pip download "${platform[@]}" --no-deps -d "$target" fbgemm-gpu==1.8.0 torchrec==1.8.0
echo "wheels in $target: $(ls "$target" | wc -l) files, $(du -sh "$target" | cut -f1)"
