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
#   MLFLOW_EXPOSE_PROMETHEUS      true             the Prometheus endpoint /metrics (`--expose-prometheus`,
#                                 its multiprocess folder MLFLOW_PROMETHEUS_DIR, /tmp/mlflow-prometheus, emptied
#                                 at start); false: none. (MLflow itself reads this variable as the folder: a
#                                 path here is passed as it is.)
#   MLFLOW_AUTH                   none             basic: MLflow's auth app (`--app-name basic-auth`): every
#                                 request needs a user's HTTP Basic credentials (setting `auth`)
#   MLFLOW_AUTH_ADMIN_USERNAME    admin            auth basic: the admin, made at the first start with
#   MLFLOW_AUTH_ADMIN_PASSWORD                     this password (or MLFLOW_AUTH_ADMIN_PASSWORD_HEX, hex-encoded,
#                                                  as the Nomad job's template renders it)
#   MLFLOW_FLASK_SERVER_SECRET_KEY                 auth basic: the server's CSRF key (or ..._HEX)
#   MLFLOW_AUTH_CACHE_SECONDS     0                auth basic: how long a checked password is kept (MLflow's
#                                                  auth_cache_ttl_seconds, 0 to 3600; 0: every request checks it)
#   MLFLOW_AUTH_DATABASE_URI      basic_auth.db beside a SQLite store's mlflow.db; the store's own URL for
#                                 PostgreSQL (its tables beside MLflow's). Written, with the admin's name,
#                                 into an ini file of this container only (MLFLOW_AUTH_CONFIG_PATH), never
#                                 in the process list.
#   MLFLOW_SERVER_EXTRA_ARGS      (empty)          more `mlflow server` options, split on spaces
#
# Every value is passed to the server as a `mlflow server` flag. The server is
# exec'd: it gets the container's signals directly.
set -eu

# Unset only: an empty one is what Nomad's template renders for a Variable without the item (refused below),
# and falling back to SQLite then would split the PostgreSQL store's writes between allocations.
: "${MLFLOW_BACKEND_STORE_URI=sqlite:////mnt/backend_store/mlflow.db}"
# Exported: the upgrade and the server read it from the environment, never from a command line (a PostgreSQL URL
# holds its password, and `ps` on the client shows every process's arguments).
export MLFLOW_BACKEND_STORE_URI
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
: "${MLFLOW_EXPOSE_PROMETHEUS:=true}"
: "${MLFLOW_PROMETHEUS_DIR:=/tmp/mlflow-prometheus}"
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

auth_cache=${MLFLOW_AUTH_CACHE_SECONDS:-0}  # used by auth basic; a bad value stops any container, before anything runs
case "$auth_cache" in
  ''|*[!0-9]*|?????*) cache_ok=false ;;  # not digits, or more than 4 of them
  *) [ "$auth_cache" -le 3600 ] && cache_ok=true || cache_ok=false ;;
esac
if [ "$cache_ok" = false ]; then
  echo "mlflow-entrypoint: MLFLOW_AUTH_CACHE_SECONDS must be a whole number of seconds from 0 (no cache) to 3600," \
       "not '$auth_cache'" >&2
  exit 78
fi

if [ "$MLFLOW_DB_UPGRADE" = "true" ] || [ "$MLFLOW_DB_UPGRADE" = "only" ]; then
  case "$MLFLOW_BACKEND_STORE_URI" in
    postgresql*|postgres:*)
      # Several allocations start together: one at a time, under a PostgreSQL advisory lock (it creates
      # MLflow's tables in an empty database, or upgrades them).
      echo "mlflow-entrypoint: mlflow db upgrade (under a PostgreSQL advisory lock)" >&2
      python "$(dirname "$0")/mlflow-db-upgrade.py"
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

# MLflow reads MLFLOW_EXPOSE_PROMETHEUS as the exporter's folder: ours says true/false, so it becomes the flag.
metrics_dir=""
case "$MLFLOW_EXPOSE_PROMETHEUS" in
  true) metrics_dir=$MLFLOW_PROMETHEUS_DIR ;;
  false|"") ;;
  /*) metrics_dir=$MLFLOW_EXPOSE_PROMETHEUS ;;
  *)
    echo "mlflow-entrypoint: MLFLOW_EXPOSE_PROMETHEUS must be true, false or a folder, not '$MLFLOW_EXPOSE_PROMETHEUS'" >&2
    exit 78
    ;;
esac
unset MLFLOW_EXPOSE_PROMETHEUS
if [ -n "$metrics_dir" ]; then
  # a restarted server must not count the requests of the process before it (multiprocess mode's files)
  mkdir -p "$metrics_dir" && rm -f "$metrics_dir"/*.db
  set -- --expose-prometheus "$metrics_dir"
else
  set --
fi

app_args=""
if [ "${MLFLOW_AUTH:-none}" = "basic" ]; then
  # Secrets hex-encoded by the Nomad job's template: decoded into the environment (never onto a command line).
  for name in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    if [ -n "$(printenv "${name}_HEX" || true)" ]; then
      value=$(python -c 'import os, sys; sys.stdout.write(bytes.fromhex(os.environ[sys.argv[1]]).decode())' "${name}_HEX")
      export "$name=$value"
    fi
    unset "${name}_HEX"
  done
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    echo "mlflow-entrypoint: MLFLOW_AUTH=basic needs MLFLOW_FLASK_SERVER_SECRET_KEY (inv deploy writes it into the" \
         "job's Nomad Variable)" >&2
    exit 78
  fi
  if [ -z "${MLFLOW_AUTH_DATABASE_URI:-}" ]; then
    case "$MLFLOW_BACKEND_STORE_URI" in
      sqlite:///*) MLFLOW_AUTH_DATABASE_URI="sqlite:///$(dirname "${MLFLOW_BACKEND_STORE_URI#sqlite:///}")/basic_auth.db" ;;
      *) MLFLOW_AUTH_DATABASE_URI=$MLFLOW_BACKEND_STORE_URI ;;
    esac
  fi
  # The ini in a folder only this user reads (the PostgreSQL URL holds a password); configparser's % doubled.
  auth_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
  umask 077
  {
    echo "[mlflow]"
    echo "default_permission = READ"
    printf 'database_uri = %s\n' "$(printf '%s' "$MLFLOW_AUTH_DATABASE_URI" | sed 's/%/%%/g')"
    printf 'admin_username = %s\n' "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
    echo "auth_cache_ttl_seconds = $auth_cache"
    echo "authorization_function = mlflow.server.auth:authenticate_request_basic_auth"
  } > "$auth_dir/basic_auth.ini"
  umask 022
  unset MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_CACHE_SECONDS
  export MLFLOW_AUTH_CONFIG_PATH="$auth_dir/basic_auth.ini"
  app_args="--app-name basic-auth"
  echo "mlflow-entrypoint: auth basic (MLflow's users and permissions)" >&2
fi

# mlflow-serve.py is `mlflow server` that execs the web server instead of waiting for it (one
# process; in bench/memory.py the container's idle RSS is 155 MiB instead of 309 MiB); it sits beside
# this script in the image and in docker/.
serve="$(dirname "$0")/mlflow-serve.py"
# shellcheck disable=SC2086 # MLFLOW_SERVER_EXTRA_ARGS and app_args are split on purpose
exec python "$serve" \
  --serve-artifacts \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "$MLFLOW_HOST" \
  --port "$MLFLOW_PORT" \
  --workers "$MLFLOW_WORKERS" \
  --allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS" \
  --cors-allowed-origins "$MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" \
  "$@" \
  $app_args \
  $MLFLOW_SERVER_EXTRA_ARGS
