#!/usr/bin/env bash
# Fresh machine -> results table: installs, writes synthetic fixtures for all six datasets, and
# trains 6 datasets x {LoRA, P-Tuning v2} on a tiny random GLM, on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
exec .venv/bin/emorec quickstart --out "${1:-runs/quickstart}"
