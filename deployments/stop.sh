#!/usr/bin/env bash
# Stop exactly what deployments/serve.sh started (each process group by its recorded pid).
set -u
cd "$(dirname "$0")/.."
RUN_DIR="${MEDISWIFT_SERVE_DIR:-$PWD/.serve}"

# The flow runs the worker started live in sessions of their own, out of reach of a signal to
# the worker's group: each gets SIGTERM first (it stops within seconds, keeping its last
# checkpoint, and tells the Prefect server how it ended: the servers stop last).
worker=$(cat "$RUN_DIR/worker.pid" 2>/dev/null || true)
runs=$( [ -n "$worker" ] && pgrep -P "$worker" || true)
if [ -n "$runs" ]; then
  for run in $runs; do kill -TERM -- "-$run" 2>/dev/null || kill -TERM "$run" 2>/dev/null; done
  for _ in $(seq 1 50); do  # a run's own watchdog ends it 20 s after the signal at the latest
    left=""
    for run in $runs; do kill -0 "$run" 2>/dev/null && left=1; done
    [ -z "$left" ] && break
    sleep 0.5
  done
  for run in $runs; do kill -KILL -- "-$run" 2>/dev/null || kill -KILL "$run" 2>/dev/null; done
  echo "stopped flow run process(es) $(echo $runs)"
fi

for name in worker mlflow prefect-server; do
  pidfile="$RUN_DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    # Up to 10 s for the group to end. An idle Prefect worker never ends on a signal in that
    # time; what must end cleanly are its flow runs (they tell the server how they ended, so
    # the server stops last), so for the worker the wait ends when only it is left.
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      if [ "$name" = worker ] && [ -z "$(pgrep -g "$pid" | grep -vx "$pid")" ]; then break; fi
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
