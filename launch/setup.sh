#!/usr/bin/env bash
# Creates .venv: torch first (CPU build 2.13.0 by default), then emorec with its test extras, at the exact versions
# in constraints.txt (the set the test suite passed with). Safe to re-run: it brings an existing venv back to that set.
#   EMOREC_TORCH_VERSION=2.x.y  another torch build (a CUDA one on a GPU machine)
#   EMOREC_CONSTRAINTS=none     the newest versions pyproject.toml allows, instead of the tested set
#   EMOREC_CONSTRAINTS=FILE     another constraints file
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
CONSTRAINTS=${EMOREC_CONSTRAINTS:-constraints.txt}
if [ "$CONSTRAINTS" != none ] && [ ! -f "$CONSTRAINTS" ]; then
  echo "setup: constraints file '$CONSTRAINTS' not found (EMOREC_CONSTRAINTS=none installs without one)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
TORCH=${EMOREC_TORCH_VERSION:-2.13.0}
.venv/bin/python -m pip install --quiet "torch==$TORCH"
if [ "$CONSTRAINTS" = none ]; then
  echo "setup: installing the newest versions pyproject.toml allows (no constraints; torch stays $TORCH)"
  # An eager upgrade would otherwise replace this torch with the newest, a multi-GB CUDA build.
  HOLD=$(mktemp)
  trap 'rm -f "$HOLD"' EXIT
  echo "torch==$TORCH" > "$HOLD"
  .venv/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -c "$HOLD" -e ".[dev]"
else
  echo "setup: installing the tested versions in $CONSTRAINTS"
  .venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[dev]"
fi
