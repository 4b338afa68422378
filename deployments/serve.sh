#!/usr/bin/env bash
# Start, on 127.0.0.1: a Prefect server, the deployments and a process worker, and an MLflow
# server on the SQLite store under MEDISWIFT_HOME. `deployments/stop.sh` stops exactly these.
# MEDISWIFT_DB=postgres (`make serve-team`): both servers on a PostgreSQL server this script
# starts and owns (deployments/postgres.py: data under MEDISWIFT_HOME/postgres, port
# MEDISWIFT_PG_PORT or a free one), and the MLflow server is every home's tracking server.
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
export MEDISWIFT_REPO="$PWD"
export MEDISWIFT_HOME="${MEDISWIFT_HOME:-$PWD/.mediswift}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
RUN_DIR="${MEDISWIFT_SERVE_DIR:-$PWD/.serve}"
DB="${MEDISWIFT_DB:-sqlite}"
case "$DB" in
  sqlite|postgres) ;;
  *) echo "serve.sh: MEDISWIFT_DB must be sqlite or postgres, not $DB" >&2; exit 2 ;;
esac
BIN="$PWD/.venv/bin"
mkdir -p "$RUN_DIR" "$MEDISWIFT_HOME"

# The same mirror as `make serve`: the shared folder beside the checkout when present; without a
# mirror the runs go upstream, so refuse to start when upstream cannot be reached.
if [ -z "${MEDISWIFT_MIRROR:-}" ] && [ -d "$PWD/../shared/mirror" ]; then
  MEDISWIFT_MIRROR="$(cd "$PWD/../shared/mirror" && pwd)"
fi
export MEDISWIFT_MIRROR="${MEDISWIFT_MIRROR:-}"
if [ -z "$MEDISWIFT_MIRROR" ] \
  && ! curl -fsI --max-time 10 -o /dev/null https://ftp.ncbi.nlm.nih.gov/pubmed/ 2>/dev/null; then
  echo "serve.sh: no mirror (set MEDISWIFT_MIRROR) and NCBI is unreachable: not starting" >&2
  exit 2
fi

# Both ports must be free: the health checks below would otherwise pass on whatever answers
# there (the UI servers a CLI run prints, an earlier `make serve`), and the stack would run
# against servers this script did not start and `make stop` cannot stop.
refuse_taken() {  # port, setting
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "serve.sh: 127.0.0.1:$1 is already in use (a server from an earlier make serve or a UI command?): stop it, or set $2 to a free port" >&2
    exit 2
  fi
}
refuse_taken "$PREFECT_PORT" PREFECT_PORT
refuse_taken "$MLFLOW_PORT" MLFLOW_PORT

# The server keeps its database under MEDISWIFT_HOME; clients only need PREFECT_API_URL.
export PREFECT_HOME="$MEDISWIFT_HOME/prefect-server"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_UI_URL="http://127.0.0.1:$PREFECT_PORT"
# A shared machine: the API accepts browser requests from its own UI only, with CSRF tokens.
# Set PREFECT_SERVER_API_AUTH_STRING (user:password) to require it from every client too; the
# worker and `prefect deployment run` then need PREFECT_API_AUTH_STRING with the same value.
export PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED=true
export PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="$PREFECT_UI_URL"
if [ -n "${PREFECT_SERVER_API_AUTH_STRING:-}" ]; then
  export PREFECT_API_AUTH_STRING="$PREFECT_SERVER_API_AUTH_STRING"
fi
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
export MEDISWIFT_MLFLOW_UI="$MLFLOW_TRACKING_URI"
export PREFECT_LOCAL_STORAGE_PATH="$MEDISWIFT_HOME/prefect-results"
# No telemetry (the server would try to reach the internet), as for CLI runs.
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# No task falls back to Prefect's default (pickled) cache records.
export PREFECT_TASKS_DEFAULT_NO_CACHE=true
# Prefect's own logging and profiles files, never ones found in its home (a planted logging.yml
# would run code when the server or the worker starts).
eval "$("$BIN/python" -m mediswift.prefect_pins)"

start() {  # name, command...: run in its own session so stop.sh can end the whole group
  local name=$1; shift
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_http() {  # url, what, name: up, and served by the process this script started
  for _ in $(seq 1 240); do
    kill -0 "$(cat "$RUN_DIR/$3.pid")" 2>/dev/null \
      || { echo "$2 exited before it came up; see $RUN_DIR/$3.log" >&2; exit 1; }
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.5
  done
  echo "$2 did not come up at $1; see $RUN_DIR" >&2
  exit 1
}

ensure_pool() {  # name, options: create the work pool unless it exists (never overwritten)
  "$BIN/prefect" work-pool create "$@" >"$RUN_DIR/pool-$1.log" 2>&1 \
    || "$BIN/prefect" work-pool inspect "$1" >/dev/null 2>&1 \
    || { cat "$RUN_DIR/pool-$1.log" >&2; exit 1; }
}

BACKEND_STORE="sqlite:///$MEDISWIFT_HOME/mlflow.db"
if [ "$DB" = postgres ]; then
  # The database first (both servers migrate theirs at start). It prints the connection
  # settings: PGPASSFILE (the passwords: none on a command line), Prefect's
  # PREFECT_API_DATABASE_CONNECTION_URL and MLflow's store.
  pg_env=$("$BIN/python" deployments/postgres.py start --data "$MEDISWIFT_HOME/postgres" \
    --run-dir "$RUN_DIR" --port "${MEDISWIFT_PG_PORT:-0}") \
    || { echo "serve.sh: PostgreSQL did not start; see $RUN_DIR/postgres.log" >&2; exit 1; }
  eval "$pg_env"
  BACKEND_STORE="$MEDISWIFT_PG_MLFLOW_URI"
  # The tracking server is every home's, not only MEDISWIFT_HOME's (its store is in no home):
  # a run of another home (`--param home=...`) logs there too.
  export MEDISWIFT_TRACKING_SHARED=1
fi

# The two servers start side by side (each takes seconds to import and to create its database).
# Prefect's app behind a Host header check (Prefect has no allowed-hosts setting; see the script).
start prefect-server "$BIN/python" deployments/prefect_server.py --host 127.0.0.1 --port "$PREFECT_PORT"
# MLflow: job execution off (no job-runner processes; the pipeline submits no MLflow jobs) and
# artifacts proxied by the server into the home (experiments it creates get mlflow-artifacts:
# locations), so a client never writes outside the server's artifact root.
start mlflow env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
  --backend-store-uri "$BACKEND_STORE" \
  --serve-artifacts --artifacts-destination "${MEDISWIFT_ARTIFACTS:-$MEDISWIFT_HOME/mlruns}" \
  --workers 1
wait_http "$PREFECT_API_URL/health" "Prefect server" prefect-server
PREFECT_UP=$SECONDS
wait_http "$MLFLOW_TRACKING_URI/health" "MLflow server" mlflow
MLFLOW_UP=$SECONDS

ensure_pool mediswift-local --type process
# The GPU pool the `pretrain-gpu` deployment targets (its workers run on GPU nodes).
ensure_pool mediswift-gpu --type process --base-job-template deployments/gpu-pool.json
"$BIN/prefect" --no-prompt deploy --all --prefect-file deployments/prefect.yaml >"$RUN_DIR/deploy.log" 2>&1 \
  || { cat "$RUN_DIR/deploy.log" >&2; exit 1; }
# The flow runs never see the database's settings (they use the servers' APIs).
start worker env -u PREFECT_API_DATABASE_CONNECTION_URL -u PGPASSFILE \
  "$BIN/prefect" worker start --pool mediswift-local --type process

cat <<MSG
Prefect UI:  $PREFECT_UI_URL
MLflow UI:   $MLFLOW_TRACKING_URI
Artifacts:   $MEDISWIFT_HOME
Run the pipeline:
  export PREFECT_API_URL=$PREFECT_API_URL
  .venv/bin/prefect deployment run mediswift/full-pipeline
Mirror:      ${MEDISWIFT_MIRROR:-none (upstream)}
Database:    $([ "$DB" = postgres ] && echo "PostgreSQL on 127.0.0.1:$MEDISWIFT_PG_PORT (data in $MEDISWIFT_HOME/postgres; up in $MEDISWIFT_PG_START_S s)" || echo "SQLite under $MEDISWIFT_HOME")
Started in ${SECONDS} s (servers answering at ${PREFECT_UP} s for Prefect, ${MLFLOW_UP} s for MLflow)
Stop everything: make stop (or deployments/stop.sh)
MSG
