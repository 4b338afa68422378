#!/usr/bin/env bash
# Stop exactly what deployments/serve.sh started (each process group by its recorded pid).
set -u
cd "$(dirname "$0")/.."
RUN_DIR="${MEDISWIFT_SERVE_DIR:-$PWD/.serve}"
for name in worker mlflow prefect-server; do
  pidfile="$RUN_DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
