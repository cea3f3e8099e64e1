#!/usr/bin/env bash
# The trainer on one GPU (benchmarks/gpu.py's docstring lists the figures): one JSON line per
# figure, under 5 minutes on a machine with one GPU and 16 cores.
#
#   benchmarks/gpu.sh                         # ResNet-50, 224 px, bf16, channels_last, batch 256
#   benchmarks/gpu.sh --device cpu --quick    # CI on the CPU, so that it cannot rot
#
# Needs Python with torch, torchvision, Pillow, numpy, pydantic, PyYAML, fsspec and
# scikit-image (its shipped photos); the repository need not be pip-installed: its packages
# are put on PYTHONPATH here.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export PYTHONPATH="$root/api:$root/trainer:$root/operator:$root/cli:$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu.py "$@"
