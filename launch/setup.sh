#!/usr/bin/env bash
# Creates .venv (torch 2.13.0 CPU build first, then emorec with its test extras). Safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==${EMOREC_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
