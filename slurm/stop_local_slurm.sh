#!/usr/bin/env bash
# Stops the daemons slurm/setup_local_slurm.sh started, by the pids in STATE_DIR only. Safe to re-run.
#   slurm/stop_local_slurm.sh STATE_DIR
set -uo pipefail

STATE=${1:?usage: $0 STATE_DIR}
[ -d "$STATE" ] || exit 0

# slurmd before slurmctld; munged only if setup started it (then its pid file is in STATE_DIR).
for name in slurmd slurmctld munged; do
  pidfile="$STATE/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; fi
    echo "stop_local_slurm: stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
exit 0
