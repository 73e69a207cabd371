#!/usr/bin/env bash
# A real one-node Slurm cluster (munged, slurmctld, slurmd) under one directory, without systemd:
# what CI runs the sbatch scripts against, and a way to try them on a laptop.
#
#   deploy/slurm/one-node-cluster.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   deploy/slurm/one-node-cluster.sh stop DIR    # cancels every job, stops the three daemons
#
# Needs the Debian packages slurm-wlm and munge, and root (slurmd starts jobs as their user).
# The node declares CPUS (default: all of them) and, for `--gres=gpu:1` jobs, GPUS fake GPUs
# (default 2; character devices made here, so jobs get CUDA_VISIBLE_DEVICES but no real GPU).
# Ports: SLURMCTLD_PORT (default 16817) and SLURMD_PORT (default 16818).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Stops the daemon whose PID is in FILE (never by name: other clusters may run beside this one).
stop_pid() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ]; then
        # Every job of this cluster, then the daemons; a job's processes die with slurmd's
        # steps (scancel), not with the daemons.
        SLURM_CONF="$dir/slurm.conf" scancel --full --quiet --signal=KILL --state=RUNNING \
            --user="$(id -un)" 2>/dev/null || true
        SLURM_CONF="$dir/slurm.conf" scancel --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue --noheader 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munged.pid"
}

need() {
    local missing=()
    for t in munged slurmctld slurmd sbatch scontrol squeue scancel sinfo; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "$0: missing ${missing[*]}: install the Debian packages slurm-wlm and munge" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "$0: slurmd must run as root (it starts jobs as their user)" >&2
        exit 1
    fi
}

# Waits up to ~20 s for CHECK to succeed; on failure prints LOG and stops what started.
wait_for() {
    local what=$1 log=$2
    shift 2
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "$0: $what did not come up; its log ($log):" >&2
    tail -n 30 "$log" >&2 || true
    stop
    exit 1
}

start() {
    need
    local host cpus gpus ctld_port slurmd_port
    host=$(hostname -s)
    cpus=${CPUS:-$(nproc)}
    gpus=${GPUS:-2}
    ctld_port=${SLURMCTLD_PORT:-16817}
    slurmd_port=${SLURMD_PORT:-16818}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # munged checks the permissions of its directories: none writable by others, the socket's
    # readable by the clients.
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/dev"
    chmod 0755 "$dir" "$dir/munge"
    chmod 0700 "$dir/state" "$dir/spool"
    if [ ! -f "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$dir/munge/munge.key"
    fi
    local sock="$dir/munge/munge.socket"
    munged --foreground --force --key-file="$dir/munge/munge.key" --socket="$sock" \
        --pid-file="$dir/munge/munged.pid.unused" --log-file="$dir/munged.log" \
        --seed-file="$dir/munge/seed" >>"$dir/munged.log" 2>&1 &
    echo $! >"$dir/munged.pid"
    wait_for munged "$dir/munged.log" test -S "$sock"

    # Fake GPUs: character devices with /dev/null's numbers, only so that slurmd accepts the
    # GRES and sets CUDA_VISIBLE_DEVICES for `--gres=gpu:1` jobs.
    local gres_line=""
    if [ "$gpus" -gt 0 ]; then
        for i in $(seq 0 $((gpus - 1))); do
            [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 1 3
        done
        echo "NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]" >"$dir/gres.conf"
        gres_line="Gres=gpu:$gpus"
    else
        : >"$dir/gres.conf"
    fi
    local user
    user=$(id -un)
    cat >"$dir/slurm.conf" <<EOF
ClusterName=latentsweep
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid.unused
SlurmdPidFile=$dir/slurmd.pid.unused
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus $gres_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -D -i -f "$SLURM_CONF" >>"$dir/slurmctld.log" 2>&1 &
    echo $! >"$dir/slurmctld.pid"
    wait_for slurmctld "$dir/slurmctld.log" scontrol ping
    slurmd -D -f "$SLURM_CONF" -N "$host" >>"$dir/slurmd.log" 2>&1 &
    echo $! >"$dir/slurmd.pid"
    # The node is ready when it takes jobs (idle), not merely when slurmd runs.
    wait_for slurmd "$dir/slurmd.log" node_idle "$host"
    echo "export SLURM_CONF=$SLURM_CONF"
}

node_idle() {
    sinfo --noheader --nodes="$1" --format=%t | grep -qx idle
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
