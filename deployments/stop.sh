#!/usr/bin/env bash
# Stop exactly what deployments/serve.sh started (each process group by its recorded pid), the
# PostgreSQL server of MEDISWIFT_DB=postgres last.
set -u
cd "$(dirname "$0")/.."
RUN_DIR="${MEDISWIFT_SERVE_DIR:-$PWD/.serve}"

others_in_group() {  # pid: the other processes of its group
  pgrep -g "$1" | grep -vx "$1"
}

end_group() {  # pid, half-seconds, [alone]: SIGTERM its group, wait, then SIGKILL what is left.
  # With `alone` the wait ends once the leader is the only one left (an idle Prefect worker
  # never ends on a signal; what must end cleanly is what it started).
  kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 "$2"); do
    kill -0 "$1" 2>/dev/null || break
    if [ "${3:-}" = alone ] && [ -z "$(others_in_group "$1")" ]; then break; fi
    sleep 0.5
  done
  kill -KILL -- "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
}

# The flow runs the worker started live in sessions of their own, out of reach of a signal to
# the worker's group: they go first (each stops within seconds, keeping its last checkpoint,
# and tells the Prefect server how it ended: the servers stop last). Their own watchdog ends
# them 20 s after the signal at the latest, so they are waited on in parallel up to 25 s.
worker=$(cat "$RUN_DIR/worker.pid" 2>/dev/null || true)
runs=$( [ -n "$worker" ] && pgrep -P "$worker" || true)
if [ -n "$runs" ]; then
  for run in $runs; do end_group "$run" 50 & done
  wait
  echo "stopped flow run process(es) $(echo $runs)"
fi

for name in worker mlflow prefect-server; do
  pidfile="$RUN_DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    end_group "$pid" 20 "$([ "$name" = worker ] && echo alone)"
    echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done

# PostgreSQL after its clients: a fast shutdown (SIGINT: open sessions end, a checkpoint is
# written), then SIGKILL to its group if it is still up after 30 s.
pidfile="$RUN_DIR/postgres.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped postgres ($pid)"
  fi
  rm -f "$pidfile"
fi
