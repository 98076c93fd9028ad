#!/bin/sh
# MLflow tracking server entrypoint. Everything is configured by environment variables; the Nomad
# job, `inv up` (container and native server) and `docker run -e` all use this contract:
#
#   MLFLOW_BACKEND_STORE_URI      sqlite:////mnt/backend_store/mlflow.db  runs, params, metrics; or
#                                 postgresql+psycopg2://user:password@host:5432/db (the Nomad job renders
#                                 it from a Nomad Variable: never in the job's text)
#   MLFLOW_ARTIFACTS_DESTINATION  /mnt/artifacts   where the server stores artifacts; clients upload
#                                 through the server (mlflow-artifacts:/), never to their own disk
#   MLFLOW_HOST                   0.0.0.0          interface to bind
#   MLFLOW_PORT                   5000
#   MLFLOW_WORKERS                1                uvicorn workers (setting `workers`); a second one added
#                                 175 MiB idle RSS in bench/memory.py (BENCHMARKS.md)
#   MLFLOW_DOMAIN                 mlflow.lan       the name behind the proxy (setting `domain`)
#   MLFLOW_SERVER_ALLOWED_HOSTS   {domain},{domain}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,[::1]:*
#                                 Host headers served; any other gets 403 "Invalid Host header"
#                                 (only /health and /version are exempt). Replaces MLflow's defaults.
#   MLFLOW_SERVER_CORS_ALLOWED_ORIGINS
#                                 http://{domain},https://{domain},http://localhost,http://localhost:*,
#                                 http://127.0.0.1,http://127.0.0.1:*
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  false      MLflow 3.x's job runner; true turns it back on (in
#                                 bench/memory.py: 1228 MiB more idle RSS with its worker processes,
#                                 OOM-killed under 512m)
#   MLFLOW_DB_UPGRADE             true             run `mlflow db upgrade` (schema migration) first;
#                                 only: run it, then exit with its exit code without serving (a
#                                 release's migration, the batch job {job}-migrate); anything else: skip it
#   MLFLOW_SERVER_EXTRA_ARGS      (empty)          more `mlflow server` options, split on spaces
#
# Every value is passed to the server as a `mlflow server` flag. The server is
# exec'd: it gets the container's signals directly.
set -eu

# Unset only: an empty one is what Nomad's template renders for a Variable without the item (refused below),
# and falling back to SQLite then would split the PostgreSQL store's writes between allocations.
: "${MLFLOW_BACKEND_STORE_URI=sqlite:////mnt/backend_store/mlflow.db}"
: "${MLFLOW_ARTIFACTS_DESTINATION:=/mnt/artifacts}"
: "${MLFLOW_HOST:=0.0.0.0}"
: "${MLFLOW_PORT:=5000}"
: "${MLFLOW_WORKERS:=1}"
: "${MLFLOW_DOMAIN:=mlflow.lan}"
: "${MLFLOW_SERVER_ALLOWED_HOSTS:=${MLFLOW_DOMAIN},${MLFLOW_DOMAIN}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,[::1]:*}"
: "${MLFLOW_SERVER_CORS_ALLOWED_ORIGINS:=http://${MLFLOW_DOMAIN},https://${MLFLOW_DOMAIN},http://localhost,http://localhost:*,http://127.0.0.1,http://127.0.0.1:*}"
: "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:=false}"
: "${MLFLOW_DB_UPGRADE:=true}"
: "${MLFLOW_SERVER_EXTRA_ARGS:=}"
export MLFLOW_SERVER_ALLOWED_HOSTS MLFLOW_SERVER_CORS_ALLOWED_ORIGINS MLFLOW_SERVER_ENABLE_JOB_EXECUTION

case "$MLFLOW_BACKEND_STORE_URI" in
  from-the-template:*)
    echo "mlflow-entrypoint: MLFLOW_BACKEND_STORE_URI was not rendered: the job's template reads it from the" \
         "Nomad Variable ${MLFLOW_BACKEND_STORE_URI#from-the-template:} (item database_url_<revision>)" >&2
    exit 78
    ;;
  "")  # the template's rendering of an item the Variable does not have (missingkey=zero)
    echo "mlflow-entrypoint: MLFLOW_BACKEND_STORE_URI is empty: in Nomad, the job's Variable lacks the item" \
         "database_url_<revision> its template reads (inv deploy writes it); outside Nomad, unset it for the" \
         "SQLite default" >&2
    exit 78
    ;;
  sqlite:///*)
    db_file=${MLFLOW_BACKEND_STORE_URI#sqlite:///}
    db_dir=$(dirname "$db_file")
    if ! [ -d "$db_dir" ] || ! [ -w "$db_dir" ]; then
      echo "mlflow-entrypoint: $db_dir is missing or not writable by uid $(id -u);" \
           "mount a folder owned by uid $(id -u) there" >&2
      exit 78
    fi
    ;;
esac
if [ -d "$MLFLOW_ARTIFACTS_DESTINATION" ] && ! [ -w "$MLFLOW_ARTIFACTS_DESTINATION" ]; then
  echo "mlflow-entrypoint: $MLFLOW_ARTIFACTS_DESTINATION is not writable by uid $(id -u)" >&2
  exit 78
fi

if [ "$MLFLOW_DB_UPGRADE" = "true" ] || [ "$MLFLOW_DB_UPGRADE" = "only" ]; then
  case "$MLFLOW_BACKEND_STORE_URI" in
    postgresql*|postgres:*)
      # Several allocations start together: one at a time, under a PostgreSQL advisory lock (it creates
      # MLflow's tables in an empty database, or upgrades them).
      echo "mlflow-entrypoint: mlflow db upgrade (under a PostgreSQL advisory lock)" >&2
      python "$(dirname "$0")/mlflow-db-upgrade.py" "$MLFLOW_BACKEND_STORE_URI"
      ;;
    *)
      echo "mlflow-entrypoint: mlflow db upgrade" >&2
      mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"
      ;;
  esac
fi
if [ "$MLFLOW_DB_UPGRADE" = "only" ]; then
  # set -e: a failed upgrade exited above with its code; here it succeeded
  echo "mlflow-entrypoint: schema upgraded; not serving (MLFLOW_DB_UPGRADE=only)" >&2
  exit 0
fi

# mlflow-serve.py is `mlflow server` that execs the web server instead of waiting for it (one
# process; in bench/memory.py the container's idle RSS is 155 MiB instead of 309 MiB); it sits beside
# this script in the image and in docker/.
serve="$(dirname "$0")/mlflow-serve.py"
# shellcheck disable=SC2086 # MLFLOW_SERVER_EXTRA_ARGS is split on purpose
exec python "$serve" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "$MLFLOW_HOST" \
  --port "$MLFLOW_PORT" \
  --workers "$MLFLOW_WORKERS" \
  --allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS" \
  --cors-allowed-origins "$MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" \
  $MLFLOW_SERVER_EXTRA_ARGS
