#!/usr/bin/env bash
# One run on this machine's GPUs (or CPU): torchrun with one process per GPU, then `emorec train`.
#   launch/train_local.sh configs/runs/meld_lora.yaml data.path=/data/MELD.Raw
set -euo pipefail
NPROC=${NPROC:-$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)}
exec torchrun --nproc_per_node "$NPROC" --nnodes 1 --master_addr 127.0.0.1 --master_port "${MASTER_PORT:-29500}" \
  -m emorec.cli train "$@"
