#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and CI. Run as root.
#
#   slurm/setup_local_slurm.sh STATE_DIR        # installs slurm-wlm + munge if missing, starts the daemons
#   source STATE_DIR/env                        # exports SLURM_CONF for sinfo/sbatch/squeue/scancel
#   slurm/stop_local_slurm.sh STATE_DIR         # stops exactly the daemons this script started
#
# Everything Slurm writes (config, state, spool, logs, pid files) lives under STATE_DIR. munged uses the
# system key (/etc/munge/munge.key, created if missing) and is started only if no munged answers yet;
# its pid is recorded only when this script started it. Safe to re-run: daemons already running from
# STATE_DIR are left alone. Ports: SLURMCTLD_PORT (6817) and SLURMD_PORT (6818) in the environment.
set -euo pipefail

STATE=${1:?usage: $0 STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CONF="$STATE/slurm.conf"
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
WAIT_S=${SLURM_SETUP_WAIT_S:-60}

die() { echo "setup_local_slurm: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts munged/slurmctld/slurmd)"

# 1. Packages, only if missing.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get to install them"
  echo "setup_local_slurm: installing slurm-wlm and munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
fi

# 2. munge: key and daemon.
if ! getent passwd munge >/dev/null; then die "no 'munge' user (the munge package creates it)"; fi
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f "$STATE/munged.pid"
  munged --force --pid-file="$STATE/munged.pid" 2>>"$STATE/munged.err" \
    || die "munged did not start: $(tail -n 5 "$STATE/munged.err")"
  for _ in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
  done
  munge -n | unmunge >/dev/null || die "munged started but does not answer"
fi

# 3. slurm.conf (rewritten only while none of our Slurm daemons is running).
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_MB > 8000 ? 8000 : MEM_MB * 9 / 10 ))
if ! alive "$STATE/slurmctld.pid" && ! alive "$STATE/slurmd.pid"; then
  mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/log"
  cat >"$CONF" <<EOF
# Written by slurm/setup_local_slurm.sh: one node (this machine), for tests.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=30
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi
export SLURM_CONF="$CONF"
printf 'export SLURM_CONF=%q\n' "$CONF" >"$STATE/env"

# 4. Daemons (each daemonises and writes its pid file).
if ! alive "$STATE/slurmctld.pid"; then
  rm -f "$STATE/slurmctld.pid"
  slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
fi
if ! alive "$STATE/slurmd.pid"; then
  rm -f "$STATE/slurmd.pid"
  slurmd -f "$CONF" || die "slurmd did not start; see $STATE/log/slurmd.log"
fi

# 5. Wait (bounded) until the node is idle.
deadline=$(( $(date +%s) + WAIT_S ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  state=$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle|mixed|allocated) echo "setup_local_slurm: node $HOST is $state; SLURM_CONF=$CONF"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
die "node $HOST not idle after ${WAIT_S}s (state '${state:-none}'); logs in $STATE/log"
