#!/usr/bin/env bash
# GPU smoke test: every method a few steps on CUDA (fp32, bf16, fp16), then the conv backbones' throughput.
#   bash benchmarks/gpu_smoke.sh [--device cuda] [--steps 50] [--write]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_smoke.py "$@"
