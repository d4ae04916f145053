#!/usr/bin/env bash
# The GPU benchmark in one command, for a machine that has torch, transformers and peft but maybe not DeepSpeed:
# wheels in .whl/ (deepspeed, hjson, pydantic and its parts) are installed into /tmp/site first.
#   bash launch/bench_gpu.sh [OUTDIR] [extra emorec bench flags]
# Writes OUTDIR/bench.json (rewritten after every row, so a run cut short keeps what it measured) and bench.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench-out}}"
shift || true
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>/dev/null
python3 -c "import torch, transformers, peft, deepspeed, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | grep -v -i warn || exit 1
PYTHONUNBUFFERED=1 timeout -s INT "${BENCH_TIMEOUT_S:-500}" python3 -m emorec bench --compile --budget 4096 8192 --profile 3 \
  --out "$out/bench.json" "$@" 2>&1 | tee "$out/bench.log" | grep -E "^(train|eval |\[|ERROR|task|cpu|NVIDIA|isolation|profile|Traceback)" | cut -c1-600
echo "bench exit: ${PIPESTATUS[0]}"
python3 - "$out/bench.json" <<'PY'
import json, sys
from emorec.bench.model import format_table
result = json.load(open(sys.argv[1]))
print(f"\nwall {result.get('wall_seconds', 0):.0f}s, versions {result.get('versions')}")
print(format_table(result))
for p in result["profiles"]:
    print(f"\ntop kernels, {p['system']} {p['method']} ({p['steps']} steps, wall {p['wall_s']:.3f}s):")
    for k in p["top"]:
        print(f"  {k['seconds']:8.4f}s {k['calls']:6d}  {k['name'][:100]}")
    print("  host side, self time:")
    for k in p.get("host_top", [])[:8]:
        print(f"  {k['seconds']:8.4f}s {k['calls']:6d}  {k['name'][:100]}")
PY
