#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, and vocalatent's SLURM tests against it.
#
#   bash scripts/slurm_check.sh            # install if missing, start, test, stop
#   VL_SLURM_KEEP=1 bash scripts/slurm_check.sh --no-tests   # leave it running (you stop it)
#
# What it does, in order (bounded: ~1 min to start on 2 cores, tests ~3-5 min, everything under
# VL_SLURM_TIMEOUT seconds, default 900):
#   1. installs the Debian packages slurm-wlm and munge when slurmctld/slurmd/munged are
#      missing (apt-get update first)                                         [root]
#   2. writes $VL_SLURM_DIR/slurm.conf (default /tmp/vocalatent-slurm): one node, this host,
#      on 127.0.0.1, with the CPUs and memory slurmd -C reads from the machine; state, logs and
#      pid files all under $VL_SLURM_DIR; exports SLURM_CONF so that every SLURM command (and
#      dask-jobqueue's sbatch/scancel) uses it
#   3. starts munged (as user munge, /run/munge socket)                       [root]
#      unless a munged already answers; starts slurmctld and slurmd in the foreground in the
#      background (as root: SlurmUser=root)                                   [root]
#      unless this configuration's controller already answers
#   4. waits (at most 60 s) until `sinfo` shows the node idle
#   5. runs the tests marked `slurm` (tests/batch/test_slurm.py) with pytest
#   6. on exit, also on failure or Ctrl-C (trap): cancels the jobs left in the queue, then stops
#      every daemon it started, by PID (SIGTERM, then SIGKILL after 10 s); daemons it found
#      running are left alone
# Idempotent: run it again and it reinstalls nothing, rewrites the same configuration, clears
# the controller's saved state (slurmctld -c) and starts afresh.
#
# Where it cannot run (not Debian/apt, or not root while the packages or daemons are missing)
# it prints "slurm_check: SKIPPED: <why>" and exits 0 — unless VL_SLURM_REQUIRED=1, when that
# is a failure (exit 2). Any failure after it could start is exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${VL_SLURM_DIR:-/tmp/vocalatent-slurm}
LIMIT=${VL_SLURM_TIMEOUT:-900}
RUN_TESTS=1
[ "${1:-}" = "--no-tests" ] && RUN_TESTS=0
START=$(date +%s)
STARTED_PIDS=()   # daemons this script started, in start order
say() { echo "slurm_check: $*"; }
skip() {
    if [ "${VL_SLURM_REQUIRED:-0}" = 1 ]; then say "FAILED (required): $*"; exit 2; fi
    say "SKIPPED: $*"; exit 0
}
left() { echo $(( LIMIT - ($(date +%s) - START) )); }

stop_all() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${VL_SLURM_KEEP:-0}" = 1 ]; then
        say "VL_SLURM_KEEP=1: leaving pids ${STARTED_PIDS[*]:-none} running (SLURM_CONF=$SLURM_CONF)"
        exit $rc
    fi
    if [ ${#STARTED_PIDS[@]} -gt 0 ] && command -v squeue >/dev/null 2>&1; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling jobs left in the queue: $(echo $jobs)"
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 30); do
                [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null || true)" ] && break
                sleep 0.5
            done
        fi
    fi
    local i pid
    for (( i=${#STARTED_PIDS[@]}-1; i>=0; i-- )); do
        pid=${STARTED_PIDS[$i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then say "pid $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
        say "stopped pid $pid"
    done
    if [ $rc -ne 0 ]; then
        say "FAILED (exit $rc); daemon logs in $STATE:"
        for f in "$STATE"/slurmctld.log "$STATE"/slurmd.log; do
            [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 15 "$f"; }
        done
    fi
    exit $rc
}

# ---------------------------------------------------------------------------- 1. install
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || skip "slurm-wlm/munge are not installed and there is no apt-get (not Debian/Ubuntu)"
    [ "$(id -u)" = 0 ] || skip "slurm-wlm/munge are not installed and installing them needs root (apt-get)"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || say "apt-get update failed; trying the install with the lists there are"
    timeout 300 apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { say "apt-get install slurm-wlm munge failed"; exit 1; }
fi
python3 -c "import dask_jobqueue" 2>/dev/null || { say "the Python package dask-jobqueue is missing (pip install 'vocalatent[cluster]')"; exit 1; }

# ---------------------------------------------------------------------------- 2. configuration
mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/jobs"
HOST=$(hostname -s)
NODE_LINE=$(slurmd -C 2>/dev/null | head -n 1 || true)
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
[ -n "$CPUS" ] || CPUS=$(nproc)
[ -n "$MEM" ] || MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
cat > "$STATE/slurm.conf.new" <<EOF
# written by vocalatent scripts/slurm_check.sh: one node ($HOST, $CPUS CPUs, $MEM MB), localhost
ClusterName=vocalatent-check
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$STATE/slurm.conf.new" "$STATE/slurm.conf"
export SLURM_CONF="$STATE/slurm.conf"
say "configuration $SLURM_CONF: node $HOST, CPUs=$CPUS, RealMemory=${MEM} MB"

trap stop_all EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------- 3. daemons
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
    say "munged already answers; using it"
else
    [ "$(id -u)" = 0 ] || skip "munged is not running and starting it needs root"
    install -d -o munge -g munge -m 0755 /run/munge
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F \
        --log-file="$STATE/munged.log" --pid-file=/run/munge/munged.pid >>"$STATE/munged.out" 2>&1 &
    STARTED_PIDS+=($!)
    for _ in $(seq 1 40); do munge_ok && break; sleep 0.25; done
    munge_ok || { say "munged (pid ${STARTED_PIDS[-1]}) does not answer"; exit 1; }
    say "started munged (pid ${STARTED_PIDS[-1]})"
fi

if timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
    say "a slurmctld for this configuration already answers; using it (and its slurmd)"
else
    [ "$(id -u)" = 0 ] || skip "slurmctld is not running and starting it needs root"
    /usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >>"$STATE/slurmctld.out" 2>&1 &
    STARTED_PIDS+=($!)
    say "started slurmctld (pid ${STARTED_PIDS[-1]})"
    /usr/sbin/slurmd -D -f "$SLURM_CONF" -N "$HOST" >>"$STATE/slurmd.out" 2>&1 &
    STARTED_PIDS+=($!)
    say "started slurmd (pid ${STARTED_PIDS[-1]})"
fi

# ---------------------------------------------------------------------------- 4. wait for idle
state=""
for _ in $(seq 1 120); do
    state=$(timeout 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    for pid in "${STARTED_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { say "daemon pid $pid exited while starting"; exit 1; }
    done
    sleep 0.5
done
[ "$state" = idle ] || { say "node $HOST is '${state:-not listed}' after 60 s, not idle"; sinfo -N -l || true; exit 1; }
say "node $HOST is idle after $(( $(date +%s) - START )) s:"
sinfo

# ---------------------------------------------------------------------------- 5. tests
if [ $RUN_TESTS = 1 ]; then
    export VOCALATENT_NO_PROGRESS=1 OMP_NUM_THREADS=1 VL_SLURM_UP=1
    budget=$(left)
    [ "$budget" -gt 30 ] || { say "no time left for the tests"; exit 1; }
    say "running the SLURM tests (at most $budget s)"
    timeout --signal=INT --kill-after=20 "$budget" \
        python3 -m pytest -q -p no:cacheprovider -m slurm -o addopts="-ra --strict-markers" --durations=10 \
        tests/batch/test_slurm.py
    say "SLURM tests passed in $(( $(date +%s) - START )) s in all"
fi
