#!/usr/bin/env bash
# Fresh machine -> test results: installs everything the tests need and runs them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
exec .venv/bin/python -m pytest -q --durations=15 "$@"
