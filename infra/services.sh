#!/usr/bin/env bash
# Start, stop and inspect the platform's long-running services on this machine:
#   api-server, scheduler, dag-processor, triggerer (Airflow, separate processes),
#   celery-worker (only with AIRFLOW__CORE__EXECUTOR=CeleryExecutor), mlflow (tracking
#   server + UI), serve (`mlp serve`).
#
#   infra/services.sh up [SERVICE ...]     # default: all of the above
#   infra/services.sh down [SERVICE ...]
#   infra/services.sh status
#   infra/services.sh command SERVICE      # print the command line `up` would run
#
# Configuration is the environment only (see infra/README.md); MLP_PROFILE=FILE loads
# KEY=VALUE lines from a profile first, where variables already set keep their value.
# Every service is bound to MLP_BIND_HOST (127.0.0.1). Beyond loopback, `up` refuses
# Airflow's SimpleAuthManager, runs MLflow with its basic-auth app and needs a token for
# `mlp serve` (infra/README.md, "Binding beyond loopback"). Logs and pid files go to
# $MLP_HOME/logs. Each service runs in its own process group (setsid), which `down` signals
# as a whole, together with any descendant that left the group (Airflow runs each task in
# a process group of its own).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$REPO/.venv/bin}"
# Airflow and its task subprocesses look up `airflow` (and the platform code) on PATH.
export PATH="$VENV_BIN:$PATH"

load_profile() {
  local file="$1" line key value
  [ -f "$file" ] || { echo "profile $file not found" >&2; exit 2; }
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(echo "$line" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')"
    [ -z "$line" ] && continue
    key="${line%%=*}"
    value="${line#*=}"
    if [ -z "${!key+x}" ]; then export "$key=$value"; fi
  done < "$file"
}

if [ -n "${MLP_PROFILE:-}" ]; then load_profile "$MLP_PROFILE"; fi
# The platform's resolved environment (MLP_HOME, AIRFLOW_HOME, the execution API URL on
# MLP_AIRFLOW_PORT ...); values already exported win.
eval "$("$VENV_BIN/mlp" env)"

BIND="${MLP_BIND_HOST:-127.0.0.1}"
AIRFLOW_PORT="${MLP_AIRFLOW_PORT:-8080}"
MLFLOW_PORT="${MLP_MLFLOW_PORT:-5000}"
SERVE_PORT="${MLP_SERVE_PORT:-8501}"
SERVE_HOST="${MLP_SERVE_HOST:-$BIND}"
LOGS="$MLP_HOME/logs"
START_TIMEOUT="${MLP_START_TIMEOUT:-180}"
STOP_TIMEOUT="${MLP_STOP_TIMEOUT:-30}"
ALL_SERVICES=(api-server scheduler dag-processor triggerer celery-worker mlflow serve)
# MLflow 3's server otherwise forks a pool of job consumers (GenAI evaluation jobs) that
# the platform does not use, and leaves their stores in /dev/shm.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

# The MLflow server's own store: the platform's tracking store when that is a database
# (tasks and UI then share it), else (tasks log through the server) this variable.
mlflow_backend() {
  if [ -n "${MLP_MLFLOW_BACKEND_STORE_URI:-}" ]; then
    echo "$MLP_MLFLOW_BACKEND_STORE_URI"
  elif [[ "$MLFLOW_TRACKING_URI" == http* ]]; then
    echo "MLFLOW_TRACKING_URI is a server ($MLFLOW_TRACKING_URI): set" \
         "MLP_MLFLOW_BACKEND_STORE_URI to its database" >&2
    exit 2
  else
    echo "$MLFLOW_TRACKING_URI"
  fi
}

is_loopback() {  # 127.0.0.0/8, ::1 or localhost
  case "$1" in
    localhost|::1|"[::1]"|127.*) return 0 ;;
    *) return 1 ;;
  esac
}

PUBLIC=0
if ! is_loopback "$BIND" || ! is_loopback "$SERVE_HOST"; then PUBLIC=1; fi
SECURITY_DOC="infra/README.md, section \"Binding beyond loopback\""

# MLflow's basic-auth app: its own user store and admin under MLP_HOME unless configured.
mlflow_auth_config() {
  if [ -n "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then return; fi
  export MLFLOW_AUTH_CONFIG_PATH="$MLP_HOME/mlflow-basic-auth.ini"
  mkdir -p "$MLP_HOME"
  cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLP_MLFLOW_AUTH_DATABASE_URI:-sqlite:///$MLP_HOME/mlflow-basic-auth.db}
admin_username = ${MLP_MLFLOW_ADMIN_USER:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
}

check_public_bind() {  # refuse an unauthenticated stack beyond loopback, before starting anything
  local services="$1" manager="${AIRFLOW__CORE__AUTH_MANAGER:-SimpleAuthManager}"
  [ "$PUBLIC" = 1 ] || return 0
  if echo "$services" | grep -qx api-server && [[ "$manager" == *SimpleAuthManager* ]]; then
    echo "refusing to bind Airflow to $BIND with SimpleAuthManager (development only): set" \
         "AIRFLOW__CORE__AUTH_MANAGER to a real auth manager; see $SECURITY_DOC" >&2
    exit 2
  fi
  if echo "$services" | grep -qx mlflow; then
    local missing=""
    [ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] || missing="MLFLOW_FLASK_SERVER_SECRET_KEY"
    if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
      missing="$missing MLFLOW_AUTH_ADMIN_PASSWORD"
    fi
    if [ -n "$missing" ]; then
      echo "refusing to bind MLflow to $BIND without its basic-auth app: set" \
           "${missing# } (see $SECURITY_DOC)" >&2
      exit 2
    fi
  fi
  if echo "$services" | grep -qx serve && ! is_loopback "$SERVE_HOST" \
      && [ -z "${MLP_SERVE_TOKEN:-}" ] && [ -z "${MLP_SERVE_API_KEYS:-}" ]; then
    echo "refusing to serve models on $SERVE_HOST without a token: set MLP_SERVE_TOKEN or" \
         "MLP_SERVE_API_KEYS (see $SECURITY_DOC)" >&2
    exit 2
  fi
}

if [ "$PUBLIC" = 1 ] && [[ "${MLFLOW_TRACKING_URI:-}" == http* ]]; then
  # Tasks and `mlp serve` log to / read from the authenticated MLflow server.
  export MLFLOW_TRACKING_USERNAME="${MLFLOW_TRACKING_USERNAME:-${MLP_MLFLOW_ADMIN_USER:-admin}}"
  if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
    export MLFLOW_TRACKING_PASSWORD="${MLFLOW_TRACKING_PASSWORD:-$MLFLOW_AUTH_ADMIN_PASSWORD}"
  fi
fi

service_cmd() {  # sets CMD to the service's command line
  case "$1" in
    api-server) CMD=(airflow api-server --host "$BIND" --port "$AIRFLOW_PORT"
                     --workers "${MLP_AIRFLOW_API_WORKERS:-1}") ;;
    scheduler) CMD=(airflow scheduler) ;;
    dag-processor) CMD=(airflow dag-processor) ;;
    triggerer) CMD=(airflow triggerer) ;;
    celery-worker) CMD=(airflow celery worker) ;;
    mlflow) local backend
            backend="$(mlflow_backend)" || exit 2
            CMD=(mlflow server --backend-store-uri "$backend" --serve-artifacts
                 --artifacts-destination "${MLP_MLFLOW_ARTIFACTS_DESTINATION:-$MLP_HOME/mlartifacts}"
                 --host "$BIND" --port "$MLFLOW_PORT" --workers "${MLP_MLFLOW_WORKERS:-1}")
            if [ "$PUBLIC" = 1 ]; then
              mlflow_auth_config
              CMD+=(--app-name basic-auth)
            fi ;;
    serve) CMD=(mlp serve --host "$SERVE_HOST" --port "$SERVE_PORT") ;;
    *) echo "unknown service $1 (known: ${ALL_SERVICES[*]})" >&2; exit 2 ;;
  esac
}

health_url() {
  case "$1" in
    api-server) echo "http://$BIND:$AIRFLOW_PORT/api/v2/monitor/health" ;;
    mlflow) echo "http://$BIND:$MLFLOW_PORT/health" ;;
    serve) echo "http://$SERVE_HOST:$SERVE_PORT/healthz" ;;
    *) echo "" ;;
  esac
}

wanted() {  # the services to act on: arguments, else all that apply to this executor
  if [ "$#" -gt 0 ]; then printf "%s\n" "$@"; return; fi
  local s
  for s in "${ALL_SERVICES[@]}"; do
    if [ "$s" = celery-worker ] && [ "$AIRFLOW__CORE__EXECUTOR" != CeleryExecutor ]; then
      continue
    fi
    echo "$s"
  done
}

alive() {  # pid file of a service names a live process
  local pidfile="$LOGS/$1.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

living() {  # the given pids that are still alive, space-separated
  local p out=""
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then out="$out $p"; fi
  done
  echo "$out"
}

descendants() {  # every process below a pid, depth first
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

start() {
  local name="$1" pid
  if alive "$name"; then
    echo "  $name already running (pid $(cat "$LOGS/$name.pid"))"
    return
  fi
  service_cmd "$name"
  # setsid: the service leads its own process group, so `down` can signal all of it.
  setsid "${CMD[@]}" >>"$LOGS/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$LOGS/$name.pid"
  STARTED="$STARTED $name"
  echo "  $name started (pid $pid, log $LOGS/$name.log)"
}

wait_ready() {  # wait until a service answers its health URL (or, without one, stays up)
  local name="$1" url deadline
  url="$(health_url "$name")"
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! alive "$name"; then
      echo "$name exited; last lines of $LOGS/$name.log:" >&2
      tail -n 30 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    if [ -z "$url" ]; then
      sleep 2; alive "$name" && return 0
    elif curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$name not ready after ${START_TIMEOUT}s; see $LOGS/$name.log" >&2
      return 1
    fi
    sleep 1
  done
}

stop_all() {  # TERM each service's group and descendants together, wait, KILL leftovers
  local name pid pids="" groups="" g deadline left
  for name in "$@"; do
    [ -f "$LOGS/$name.pid" ] || continue
    pid="$(cat "$LOGS/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      echo "  stopping $name (pid $pid)"
      groups="$groups $pid"
      pids="$pids $pid $(descendants "$pid" | tr '\n' ' ' || true)"
      kill -TERM -- "-$pid" 2>/dev/null || true
    fi
  done
  if [ -n "${pids// /}" ]; then kill -TERM $pids 2>/dev/null || true; fi
  deadline=$((SECONDS + STOP_TIMEOUT))
  while :; do
    # What is left: the pids seen at the start plus anything now in the services' groups.
    left="$(living $pids) $(for g in $groups; do pgrep -g "$g" || true; done | tr '\n' ' ')"
    [ -z "${left// /}" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "  still running after ${STOP_TIMEOUT}s, killing:"
      ps -o pid=,args= -p "$(echo $left | tr ' ' ',')" 2>/dev/null | cut -c1-120 \
        | sed 's/^/    /' || true
      break
    fi
    sleep 0.5
  done
  for g in $groups; do kill -KILL -- "-$g" 2>/dev/null || true; done
  left="$(living $pids)"
  if [ -n "${left// /}" ]; then kill -KILL $left 2>/dev/null || true; fi
  for name in "$@"; do rm -f "$LOGS/$name.pid"; done
}

airflow_login() {
  local user="${MLP_AIRFLOW_USER:-admin}" file
  file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
  if [ -n "${MLP_AIRFLOW_PASSWORD:-}" ]; then
    echo "$user / (MLP_AIRFLOW_PASSWORD)"
  elif [ -f "$file" ]; then
    echo "$user / $("$VENV_BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "?"))' "$file" "$user") (from $file)"
  else
    echo "$user / (generated into $file on first start)"
  fi
}

urls() {
  echo "Airflow UI + REST API  http://$BIND:$AIRFLOW_PORT   login $(airflow_login)"
  echo "MLflow UI              http://$BIND:$MLFLOW_PORT"
  echo "Model serving          http://$SERVE_HOST:$SERVE_PORT   (/v1/models/<name>, /demo)"
}

cmd_up() {
  local services s failed=0
  services="$(wanted "$@")"
  check_public_bind "$services"
  mkdir -p "$LOGS"
  echo "MLP_HOME=$MLP_HOME  executor=$AIRFLOW__CORE__EXECUTOR  tracking=$MLFLOW_TRACKING_URI"
  if echo "$services" | grep -qE 'api-server|scheduler|dag-processor|triggerer|celery-worker'; then
    echo "  airflow db migrate"
    airflow db migrate >>"$LOGS/db-migrate.log" 2>&1 \
      || { echo "airflow db migrate failed; see $LOGS/db-migrate.log" >&2; exit 1; }
  fi
  # Whatever goes wrong from here on (a service that dies, a timeout, an error in this
  # script), what this call started is stopped again.
  STARTED=""
  trap 'echo "start-up failed; stopping what was started" >&2; stop_all $STARTED' EXIT
  # serve starts once mlflow answers: both would otherwise create a fresh store's schema
  # at the same time.
  for s in $services; do
    if [ "$s" = serve ] && echo "$services" | grep -qx mlflow; then continue; fi
    start "$s"
  done
  if echo "$services" | grep -qx serve && echo "$services" | grep -qx mlflow; then
    wait_ready mlflow || exit 1
    start serve
  fi
  for s in $services; do wait_ready "$s" || failed=1; done
  [ "$failed" = 0 ] || exit 1
  trap - EXIT
  echo "up:"
  urls
}

cmd_down() {
  if [ "$#" -gt 0 ]; then stop_all "$@"; else stop_all "${ALL_SERVICES[@]}"; fi
  echo "down"
}

cmd_status() {
  local s rc=0
  for s in "${ALL_SERVICES[@]}"; do
    if alive "$s"; then
      echo "  $s running (pid $(cat "$LOGS/$s.pid"))"
    elif [ -f "$LOGS/$s.pid" ]; then
      echo "  $s dead (stale pid file)"; rc=1
    else
      echo "  $s stopped"
    fi
  done
  urls
  return "$rc"
}

action="${1:-status}"
shift || true
case "$action" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status ;;
  command) service_cmd "${1:?usage: $0 command SERVICE}"; printf "%q " "${CMD[@]}"; echo ;;
  *) echo "usage: $0 up|down|status|command [SERVICE ...]" >&2; exit 2 ;;
esac
