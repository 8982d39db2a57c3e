#!/usr/bin/env bash
# Stop the daemon start.sh started for STATE_DIR, then what is left of its process tree and
# session (warm-env helpers, runtime agents, kernels). Processes are found through /proc by
# pid, parent and session, never by name; a pid whose start time differs from the one recorded
# at start is a different process that reused the number, and is left alone.
#   stop.sh STATE_DIR          exits 0 when nothing (of ours) runs any more
set -uo pipefail
STATE=${1:?usage: stop.sh STATE_DIR}
[ -s "$STATE/daemon.pid.env" ] || { echo "stop.sh: nothing started in $STATE"; exit 0; }
RTD_PID= RTD_PID_START= RTD_IPC_DIR=
# shellcheck disable=SC1091
. "$STATE/daemon.pid.env"
[ -s "$STATE/daemon.env" ] && . "$STATE/daemon.env"
case "$RTD_PID" in ''|*[!0-9]*) echo "stop.sh: bad pid record in $STATE" >&2; exit 1 ;; esac

# start time of a live process (a zombie has finished: nothing to stop)
start_ticks() { awk '{sub(/.*\) /, ""); if ($1 != "Z") print $20}' "/proc/$1/stat" 2>/dev/null; }
ours() { [ -n "$RTD_PID_START" ] && [ "$(start_ticks "$RTD_PID")" = "$RTD_PID_START" ]; }
# pids of the daemon's descendants and of its session (orphans keep the session id)
family() {
  local f line rest
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$f" || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${f//[!0-9]/} $2 $4 ${20}"
  done | awk -v r="$RTD_PID" '
    { pid[NR]=$1; ppid[NR]=$2; sid[NR]=$3; t[NR]=$4 }
    END { mark[r]=1; do { more=0
            for (i=1;i<=NR;i++) if (!(pid[i] in mark) && ((ppid[i] in mark) || sid[i]==r)) { mark[pid[i]]=1; more=1 }
          } while (more)
          for (i=1;i<=NR;i++) if (pid[i]!=r && (pid[i] in mark)) print pid[i] ":" t[i] }'
}
# of "pid:start" pairs, the pids still running with that same start time
alive() { local e; for e in "$@"; do [ "$(start_ticks "${e%%:*}")" = "${e#*:}" ] && echo "$e"; done; }

KIDS=
if ours; then
  KIDS=$(family)
  kill -TERM "$RTD_PID" 2>/dev/null
  for _ in $(seq 100); do ours || break; sleep 0.1; done
  if ours; then echo "stop.sh: daemon $RTD_PID ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$RTD_PID"; fi
  echo "stop.sh: daemon $RTD_PID stopped"
elif kill -0 "$RTD_PID" 2>/dev/null; then
  echo "stop.sh: pid $RTD_PID is another process now (start time differs); not touching it"
else
  echo "stop.sh: daemon $RTD_PID was not running"
fi
# Leftovers: the snapshot taken before SIGTERM, plus what still carries the daemon's session id.
sleep 0.3
# shellcheck disable=SC2046
LEFT=$(alive $( { echo "$KIDS"; family; } | sort -u))
if [ -n "$LEFT" ]; then
  pids() { for e in "$@"; do echo "${e%%:*}"; done; }
  echo "stop.sh: terminating leftover helpers: $(echo $(pids $LEFT))"
  # shellcheck disable=SC2046,SC2086
  kill -TERM $(pids $LEFT) 2>/dev/null
  for _ in $(seq 30); do [ -z "$(alive $LEFT)" ] && break; sleep 0.1; done
  # shellcheck disable=SC2046,SC2086
  STILL=$(alive $LEFT); [ -n "$STILL" ] && kill -KILL $(pids $STILL) 2>/dev/null
fi
rm -f "$STATE/daemon.pid" "$STATE/daemon.pid.env" "$STATE/runtimed.sock"
# the state dir's own kernel IPC dir (see start.sh); rmdir: only if its kernels cleaned up
[ -n "$RTD_IPC_DIR" ] && rmdir "$RTD_IPC_DIR" 2>/dev/null
exit 0
