#!/usr/bin/env bash
# Make sure Postgres, Redis and RabbitMQ answer before `make test` / `make run`.
#
# Hosts and ports come from BILLFOLD_DATABASE_URL, BILLFOLD_REDIS_URL and
# BILLFOLD_AMQP_URL (same defaults as the code), so an override points the check at
# the same servers the code will use. An engine that is down on THIS machine and
# installed here is started with the same commands as on the CI machine (see
# /work/shared/TOOLING.md); anything else gets one line saying how to start it, and
# the script fails. It never installs packages (.ci/run does that on CI machines).
set -euo pipefail

DATABASE_URL=${BILLFOLD_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/billfold}
REDIS_URL=${BILLFOLD_REDIS_URL:-redis://127.0.0.1:6379/0}
AMQP_URL=${BILLFOLD_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
HINT="start them with: docker compose up -d postgres redis rabbitmq"

log() { echo "ensure-services: $*" >&2; }

# host_port URL DEFAULT_PORT -> prints "HOST PORT". Handles scheme://user:pass@host:port/path
# and [v6]:port; anything fancier (several hosts, unix sockets) is out of scope.
host_port() {
  local rest=${1#*://} host port
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  if [[ $rest == \[* ]]; then
    host=${rest%%]*}
    host=${host#[}
    port=${rest#*]}
  else
    host=${rest%%:*}
    port=${rest#"$host"}
  fi
  port=${port#:}
  echo "${host:-127.0.0.1} ${port:-$2}"
}

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

# Plain TCP connect with bash's /dev/tcp: the fallback when a client tool is missing.
# `timeout` bounds a connect to a host that drops packets (absent on stock macOS).
tcp_open() {
  local limit=()
  command -v timeout >/dev/null && limit=(timeout 3)
  "${limit[@]}" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

pg_up() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -t 3 -h "$1" -p "$2"
  else
    tcp_open "$1" "$2"
  fi
}

redis_up() {
  if command -v redis-cli >/dev/null; then
    # A password-protected Redis answers NOAUTH: it is up, the code will log in.
    local reply
    reply=$(timeout 3 redis-cli -h "$1" -p "$2" ping 2>&1) || true
    [[ $reply == PONG || $reply == NOAUTH* ]]
  else
    tcp_open "$1" "$2"
  fi
}

# The AMQP listener opens only once the broker has booted, so a TCP connect is a
# fair check and, unlike rabbitmq-diagnostics, needs no Erlang cookie (no root).
amqp_up() { tcp_open "$1" "$2"; }

# wait_for SECONDS CHECK ARGS... -> retries CHECK every second.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]] || return 1
  # shellcheck disable=SC2046  # one cluster version directory, as on the CI machine
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
}

start_redis() {
  command -v redis-server >/dev/null || return 1
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$1" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null || return 1
  rabbitmq-server -detached
  # Booting takes ~20 s; ping answers once the node is running.
  wait_for 90 rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

# ensure NAME URL DEFAULT_PORT CHECK START WAIT_SECONDS
ensure() {
  local name=$1 url=$2 default_port=$3 check=$4 start=$5 wait_s=$6 host port
  read -r host port < <(host_port "$url" "$default_port")
  if "$check" "$host" "$port"; then
    log "$name at $host:$port answers"
    return 0
  fi
  # Start only what this machine would serve on that address: the Postgres and
  # RabbitMQ start commands know nothing of ports, so a non-default port is
  # somebody else's server (Redis is started on whatever port was asked).
  if is_local "$host" && [[ $port == "$default_port" || $name == redis ]]; then
    log "$name at $host:$port is down; starting it"
    if "$start" "$port" >&2 && wait_for "$wait_s" "$check" "$host" "$port"; then
      log "$name at $host:$port answers"
      return 0
    fi
  fi
  log "ERROR: $name does not answer at $host:$port; $HINT"
  return 1
}

failed=0
ensure postgres "$DATABASE_URL" 5432 pg_up start_postgres 30 || failed=1
ensure redis "$REDIS_URL" 6379 redis_up start_redis 10 || failed=1
ensure rabbitmq "$AMQP_URL" 5672 amqp_up start_rabbitmq 30 || failed=1
exit "$failed"
