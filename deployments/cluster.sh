#!/usr/bin/env bash
# Start a local Dask cluster on 127.0.0.1 (a scheduler and DASK_WORKERS worker processes) for the
# data stages, the way `make serve` starts Prefect: `deployments/cluster.sh stop` stops exactly
# what this started. Point a recipe at it with
#   --set executor.kind=dask --set executor.address=tcp://127.0.0.1:$DASK_PORT
# Workers run from this checkout with its venv, so they import the same code and see the same
# home; on several machines start `dask worker tcp://<scheduler>:8786` on each (same code, the
# home on a shared file system).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${MEDISWIFT_SERVE_DIR:-$PWD/.serve}"
DASK_PORT="${DASK_PORT:-8786}"
DASK_WORKERS="${DASK_WORKERS:-2}"
BIN="$PWD/.venv/bin"
mkdir -p "$RUN_DIR"

if [ "${1:-start}" = stop ]; then
  for f in "$RUN_DIR"/dask-*.pid; do
    [ -e "$f" ] || continue
    kill -TERM -- "-$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  echo "Dask cluster stopped"
  exit 0
fi

start() {  # name, command...: own session, so stop ends the whole group
  local name=$1; shift
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

start dask-scheduler "$BIN/dask" scheduler --host 127.0.0.1 --port "$DASK_PORT" \
  --dashboard-address 127.0.0.1:0
for _ in $(seq 1 60); do
  "$BIN/python" -c "import socket; socket.create_connection(('127.0.0.1', $DASK_PORT), 1)" \
    2>/dev/null && break
  sleep 1
done
start dask-workers "$BIN/dask" worker "tcp://127.0.0.1:$DASK_PORT" --host 127.0.0.1 \
  --nworkers "$DASK_WORKERS" --nthreads 1

cat <<MSG
Dask scheduler: tcp://127.0.0.1:$DASK_PORT ($DASK_WORKERS worker processes)
Use it: .venv/bin/mediswift run --recipe demo --set executor.kind=dask \\
          --set executor.address=tcp://127.0.0.1:$DASK_PORT
Stop it: make cluster-stop (or deployments/cluster.sh stop)
MSG
