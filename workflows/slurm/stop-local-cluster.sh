#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by workflows/slurm/start-local-cluster.sh: cancels nothing
# by itself (running jobs die with slurmd), stops slurmd, slurmctld and munged by their pid files.
# The packages, /etc/slurm/slurm.conf and the state in /var/lib/slurm stay; start-local-cluster.sh
# brings it back.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop-local-cluster: error: must run as root" >&2; exit 1; }
grep -qF "# written by openmlip workflows/slurm/start-local-cluster.sh" /etc/slurm/slurm.conf 2>/dev/null \
    || { echo "stop-local-cluster: /etc/slurm/slurm.conf is not the local cluster's; nothing to stop"; exit 0; }

# a live process (not a zombie: where PID 1 does not reap, a stopped daemon lingers as one)
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
stop() {  # pid file, name
    local pid; pid=$(cat "$1" 2>/dev/null) || pid=""
    if [ -n "$pid" ] && alive "$pid"; then
        kill "$pid"
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then echo "stop-local-cluster: $2 still running (pid $pid)" >&2; return 1; fi
        echo "stop-local-cluster: stopped $2"
    else
        echo "stop-local-cluster: $2 not running"
    fi
    rm -f "$1"
}
rc=0
stop /run/slurmd.pid slurmd || rc=1
stop /run/slurmctld.pid slurmctld || rc=1
stop /run/munge/munged.pid munged || rc=1
exit $rc
