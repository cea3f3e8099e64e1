#!/usr/bin/env bash
# The trainer on one GPU (benchmarks/gpu.py's docstring lists the figures): one JSON line per
# figure, under 5 minutes on a machine with one GPU and 16 cores.
#
#   benchmarks/gpu.sh                         # ResNet-50, 224 px, bf16, channels_last, batch 256
#   benchmarks/gpu.sh --device cpu --quick    # CI on the CPU, so that it cannot rot
#
# Needs Python with torch, torchvision, Pillow, numpy, PyYAML, fsspec, scikit-image (its shipped
# photos), scikit-learn, matplotlib and prometheus-client, which the lent GPU machines' image
# holds, and what the trainer's imports need beyond them, which that image lacks: pydantic,
# pydantic-core, pydantic-settings, annotated-types, typing-inspection, python-dotenv,
# pycocotools, botocore and jmespath. Put their wheels (CPython 3.12, manylinux x86-64) in
# .whl/ at the checkout's root, e.g. `python3 -m pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 -d .whl NAME==VERSION`, and this
# script installs them into a temporary folder, from there alone, before it runs.
# The repository need not be pip-installed: its packages are put on PYTHONPATH here.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
python="${PYTHON:-python3}"
site=""
if compgen -G "$root/.whl/*.whl" >/dev/null; then
    site="$(mktemp -d)"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" "$root"/.whl/*.whl
fi
export PYTHONPATH="$root/api:$root/trainer:$root/operator:$root/cli:$root${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu.py "$@"
