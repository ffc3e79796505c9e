#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for running and testing the Snakemake workflow with
# `--profile workflows/profiles/slurm` (docs/workflows.md, "On a SLURM cluster").
#
#   sudo workflows/slurm/start-local-cluster.sh     # idempotent: installs, configures, starts, waits
#   sudo workflows/slurm/stop-local-cluster.sh
#
# What it does (Debian/Ubuntu, as root):
#   * apt-get installs slurm-wlm (slurmctld, slurmd, slurm-client) and munge, if missing (SLURM 22.05 on
#     Debian 12);
#   * writes /etc/slurm/slurm.conf for ONE node on localhost, sized from `slurmd -C` (CPUs, memory), with
#     one partition "$SLURM_LOCAL_PARTITION" (default: local); a slurm.conf that this script did not
#     write is never overwritten;
#   * starts munged, slurmctld and slurmd (plain daemons: no systemd needed) and waits until `sinfo`
#     shows the node idle.
#
# No slurmdbd and no database: the executor plugin reads job states with `squeue --states=all`
# (profile setting `slurm-status-command: squeue`), which works because MinJobAge=3600 keeps finished
# jobs in slurmctld for an hour. `sacct` is therefore NOT usable on this cluster ("Slurm accounting
# storage is disabled"); every finished job is also appended to /var/log/slurm/jobcomp.log.
# Jobs run as the submitting user (root is allowed); slurmctld/slurmd run as root (SlurmUser=root).
# Process tracking is proctrack/linuxproc and no cgroups are used, so this also runs in containers
# and VMs without systemd (measured in a Firecracker VM); memory and CPU requests are scheduled but
# not enforced.
set -euo pipefail

PARTITION=${SLURM_LOCAL_PARTITION:-local}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by openmlip workflows/slurm/start-local-cluster.sh"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-120}   # seconds to wait for the node to become idle

say() { echo "start-local-cluster: $*"; }
die() { echo "start-local-cluster: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, writes /etc/slurm, starts daemons)"

# one start at a time (parallel pytest workers may call this together); the daemons must not inherit
# the lock (9>&- below), or the next start would wait for them to exit
exec 9>/run/openmlip-local-slurm.lock
flock 9

# --- packages ------------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || command -v "/usr/sbin/${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: install slurm-wlm and munge yourself"
    say "installing slurm-wlm munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get install -y -q --no-install-recommends slurm-wlm munge >/tmp/openmlip-slurm-apt.log 2>&1; }
    if ! apt_install; then
        apt-get update -q >>/tmp/openmlip-slurm-apt.log 2>&1 || true
        apt_install || { tail -20 /tmp/openmlip-slurm-apt.log >&2; die "apt-get install slurm-wlm munge failed (log: /tmp/openmlip-slurm-apt.log)"; }
    fi
fi
export PATH=/usr/sbin:/sbin:$PATH

# --- munge -----------------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "the munge package did not create the 'munge' user"
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null; else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1 9>&- || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge credentials do not round-trip (see /var/log/munge/munged.log)"
fi

# --- slurm.conf ------------------------------------------------------------------------------------
host=$(hostname -s)
hw=$(slurmd -C 2>/dev/null | head -1) || true
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw"); cpus=${cpus:-$(nproc)}
mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$mem" ] || mem=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
mem=$(( mem * 95 / 100 ))   # leave room for the daemons and the submitting Snakemake
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: not touching a real cluster's configuration"
fi
mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
new=$(mktemp)
cat >"$new" <<EOF
$MARK
# One node on localhost: slurmctld + slurmd on $host, munge authentication, no accounting database.
ClusterName=openmlip-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
# no cgroups (containers): plain process tracking, no task binding, no accounting gather
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# every finished job, one line each (JobId, UserId, Name, JobState, ...): the record of what ran
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
# finished jobs stay visible to 'squeue --states=all' (the executor's status query) for an hour
MinJobAge=3600
SchedulerType=sched/backfill
# jobs share the node by CPU and memory
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
changed=1
if [ -e "$CONF" ] && cmp -s "$new" "$CONF"; then changed=0; fi
[ $changed = 1 ] && { say "writing $CONF ($cpus CPUs, ${mem} MB, partition $PARTITION)"; mv "$new" "$CONF"; chmod 0644 "$CONF"; } || rm -f "$new"

# a live process (not a zombie: where PID 1 does not reap, a stopped daemon lingers as one)
alive() { local pid; pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null; }

# --- daemons -----------------------------------------------------------------------------------------
if [ $changed = 1 ]; then   # a new configuration: restart what runs (pid files: only our daemons)
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if alive $pidfile; then kill "$(cat $pidfile)"; for _ in $(seq 100); do alive $pidfile || break; sleep 0.1; done; fi
    done
fi
if ! alive /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 9>&- || die "slurmctld did not start: $(tail -5 $LOG_DIR/slurmctld.log 2>/dev/null)"
fi
if ! alive /run/slurmd.pid; then
    say "starting slurmd"
    slurmd </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 9>&- || die "slurmd did not start: $(tail -5 $LOG_DIR/slurmd.log 2>/dev/null)"
fi

state=""
for _ in $(seq $(( TIMEOUT * 2 ))); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1 | tr -d '*~#')
    case "$state" in idle|mix|alloc) break ;; esac
    if [[ "$state" =~ ^(down|drain|drng|fail|inval) ]]; then
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
case "$state" in
    idle|mix|alloc) ;;
    *) echo "--- sinfo:" >&2; sinfo -N -l >&2 || true
       echo "--- $LOG_DIR/slurmctld.log:" >&2; tail -15 "$LOG_DIR/slurmctld.log" >&2 || true
       echo "--- $LOG_DIR/slurmd.log:" >&2; tail -15 "$LOG_DIR/slurmd.log" >&2 || true
       die "node $host is '${state:-unknown}' after ${TIMEOUT}s, not idle" ;;
esac
say "node $host is $state: partition $PARTITION, $cpus CPUs, ${mem} MB (sinfo; squeue; logs in $LOG_DIR)"
say "stop it with: $(dirname "$0")/stop-local-cluster.sh"
