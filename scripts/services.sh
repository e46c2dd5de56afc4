#!/usr/bin/env bash
# Brings up what hxjobs needs, on loopback: PostgreSQL and a Kafka-compatible
# broker (Nisshi, durable sqlite storage). Idempotent: installs what is
# missing, starts what is stopped, leaves running services alone.
#
#   scripts/services.sh up|down|status
#   scripts/services.sh browser   Chromium + ChromeDriver (Debian) for the console tests
#   scripts/services.sh oidc      the npm package oidc-provider, an OpenID provider
#                                 the console's login tests start (scripts/oidc-provider.mjs)
#   scripts/services.sh s3        moto's S3-compatible server and duckdb (PyPI) for the
#                                 object-store tests; with HXJOBS_S3_PORT also starts one
#
# Uses your own services instead when these are set:
#   DATABASE_URL             an existing PostgreSQL (nothing is installed)
#   KAFKA_BOOTSTRAP_SERVERS  an existing Kafka, Redpanda, ... (nothing is installed)
# State (broker data, logs, pid) lives in $HXJOBS_STATE_DIR
# (default ~/.local/state/hxjobs); HXJOBS_BROKER_PORT moves the broker off
# 9092, and HXJOBS_BROKER_FRESH=1 makes `up` start it on empty storage
# (scripts/test.sh uses both for a broker of its own).
set -euo pipefail

NISSHI_VERSION=0.7.0-pre.2
BROKER_HOST=127.0.0.1
BROKER_PORT=${HXJOBS_BROKER_PORT:-9092}
DEFAULT_DATABASE_URL="postgres://hxjobs:hxjobs@127.0.0.1:5432/hxjobs"
STATE_DIR=${HXJOBS_STATE_DIR:-$HOME/.local/state/hxjobs}
BROKER_DIR="$STATE_DIR/broker"
BROKER_PID="$BROKER_DIR/nisshi.pid"

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# True when host:port accepts a TCP connection.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  local host=$1 port=$2 what=$3 i
  for i in $(seq 1 120); do
    port_open "$host" "$port" && return 0
    sleep 0.5
  done
  die "$what did not open $host:$port within 60 s"
}

as_postgres() { runuser -u postgres -- "$@"; }

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* yourself, or set DATABASE_URL"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------

pg_cluster() { pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1, $2}'; }

postgres_up() {
  if [ -n "${DATABASE_URL:-}" ]; then
    command -v psql >/dev/null || apt_install postgresql-client
    psql "$DATABASE_URL" -qtAc 'SELECT 1' >/dev/null 2>&1 \
      || die "cannot reach PostgreSQL at DATABASE_URL ($(redact "$DATABASE_URL"))"
    say "PostgreSQL: using DATABASE_URL ($(redact "$DATABASE_URL"))"
    return
  fi
  command -v pg_ctlcluster >/dev/null || { say "installing PostgreSQL (Debian package)"; apt_install postgresql; }
  local cluster
  cluster=$(pg_cluster)
  [ -n "$cluster" ] || die "no PostgreSQL cluster found (pg_lsclusters is empty)"
  # shellcheck disable=SC2086
  set -- $cluster
  if ! pg_lsclusters --no-header | awk -v v="$1" -v n="$2" '$1==v && $2==n && $4=="online" {found=1} END {exit !found}'; then
    say "starting PostgreSQL $1/$2"
    pg_ctlcluster "$1" "$2" start
  fi
  wait_port 127.0.0.1 5432 PostgreSQL
  as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'hxjobs'" | grep -q 1 \
    || as_postgres psql -qc "CREATE ROLE hxjobs LOGIN CREATEDB PASSWORD 'hxjobs'"
  as_postgres psql -qtAc "SELECT 1 FROM pg_database WHERE datname = 'hxjobs'" | grep -q 1 \
    || as_postgres psql -qc "CREATE DATABASE hxjobs OWNER hxjobs"
  say "PostgreSQL: $(redact "$DEFAULT_DATABASE_URL")"
}

postgres_down() {
  if [ -n "${DATABASE_URL:-}" ]; then
    say "PostgreSQL: external (DATABASE_URL), left running"
    return
  fi
  local cluster
  cluster=$(pg_cluster)
  if [ -n "$cluster" ]; then
    # shellcheck disable=SC2086
    set -- $cluster
    pg_ctlcluster "$1" "$2" stop 2>/dev/null || true
    say "PostgreSQL $1/$2 stopped"
  fi
}

redact() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

# --- Kafka-compatible broker -------------------------------------------------

nisshi_bin() {
  if command -v nisshi >/dev/null; then command -v nisshi; return; fi
  local candidate="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
  [ -x "$candidate" ] && echo "$candidate"
  return 0
}

broker_up() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
    local first=${KAFKA_BOOTSTRAP_SERVERS%%,*}
    port_open "${first%:*}" "${first##*:}" || die "cannot reach Kafka at $KAFKA_BOOTSTRAP_SERVERS"
    say "Kafka: using KAFKA_BOOTSTRAP_SERVERS ($KAFKA_BOOTSTRAP_SERVERS)"
    return
  fi
  if [ "${HXJOBS_BROKER_FRESH:-0}" = 1 ]; then
    broker_down
    for _ in $(seq 1 40); do port_open "$BROKER_HOST" "$BROKER_PORT" || break; sleep 0.25; done
    rm -f "$BROKER_DIR"/broker.db*
  fi
  if port_open "$BROKER_HOST" "$BROKER_PORT"; then
    say "Kafka: broker already listening on $BROKER_HOST:$BROKER_PORT"
    return
  fi
  local bin
  bin=$(nisshi_bin)
  if [ -z "$bin" ]; then
    say "installing the Nisshi broker $NISSHI_VERSION from crates.io (about 12 minutes, once)"
    command -v cargo >/dev/null || die "cargo not found: it is needed to install the broker"
    env -u CARGO_TARGET_DIR cargo install nisshi --version "$NISSHI_VERSION" --locked \
      --features dynostore,libsql --quiet
    bin=$(nisshi_bin)
    [ -n "$bin" ] || die "nisshi was installed but is not on PATH or in ~/.cargo/bin"
  fi
  mkdir -p "$BROKER_DIR"
  say "starting Nisshi on $BROKER_HOST:$BROKER_PORT (data: $BROKER_DIR/broker.db)"
  (
    cd "$BROKER_DIR"
    nohup setsid "$bin" broker \
      --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --storage-engine "sqlite://broker.db" >>broker.log 2>&1 </dev/null &
    echo $! >"$BROKER_PID"
  )
  wait_port "$BROKER_HOST" "$BROKER_PORT" "the Nisshi broker (log: $BROKER_DIR/broker.log)"
}

# The event topics and the dead-letter topic, named as hxjobs names them
# (KAFKA_TOPIC_* overrides), on the local broker. hxjobs also creates
# missing topics itself on any broker.
topics_up() {
  [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || return 0
  local bin existing name partitions
  bin=$(nisshi_bin)
  existing=$("$bin" topic list --broker "tcp://$BROKER_HOST:$BROKER_PORT" 2>/dev/null || echo "[]")
  for spec in \
    "${KAFKA_TOPIC_LLM_REQUESTS:-llm-requests}:${KAFKA_TOPIC_PARTITIONS:-3}" \
    "${KAFKA_TOPIC_USER_FEEDBACK:-user-feedback}:${KAFKA_TOPIC_PARTITIONS:-3}" \
    "${KAFKA_TOPIC_SYSTEM_METRICS:-system-metrics}:${KAFKA_TOPIC_PARTITIONS:-3}" \
    "${KAFKA_TOPIC_BUSINESS_EVENTS:-business-events}:${KAFKA_TOPIC_PARTITIONS:-3}" \
    "${KAFKA_TOPIC_ERROR_EVENTS:-error-events}:${KAFKA_TOPIC_PARTITIONS:-3}" \
    "${KAFKA_TOPIC_DEAD_LETTER:-dead-letter-queue}:${KAFKA_TOPIC_DEAD_LETTER_PARTITIONS:-1}"; do
    name=${spec%:*}
    partitions=${spec##*:}
    grep -q "\"name\":\"$name\"" <<<"$existing" && continue
    "$bin" topic create "$name" --broker "tcp://$BROKER_HOST:$BROKER_PORT" --partitions "$partitions" \
      --config "retention.ms=${KAFKA_TOPIC_RETENTION_MS:-604800000}" >/dev/null
    say "created topic $name ($partitions partitions)"
  done
}

broker_down() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
    say "Kafka: external (KAFKA_BOOTSTRAP_SERVERS), left running"
    return
  fi
  if [ -f "$BROKER_PID" ] && kill -0 "$(cat "$BROKER_PID")" 2>/dev/null; then
    kill "$(cat "$BROKER_PID")"
    for _ in $(seq 1 40); do kill -0 "$(cat "$BROKER_PID")" 2>/dev/null || break; sleep 0.25; done
    rm -f "$BROKER_PID"
    say "Nisshi stopped"
  else
    say "Nisshi: not running (from here)"
  fi
}

# --- commands ----------------------------------------------------------------

status() {
  local db=${DATABASE_URL:-$DEFAULT_DATABASE_URL}
  if command -v psql >/dev/null && psql "$db" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL  up    $(redact "$db")"
  else
    echo "PostgreSQL  down  $(redact "$db")"
  fi
  local kafka=${KAFKA_BOOTSTRAP_SERVERS:-$BROKER_HOST:$BROKER_PORT}
  local first=${kafka%%,*}
  if port_open "${first%:*}" "${first##*:}"; then
    local how="external"
    if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && [ -f "$BROKER_PID" ] && kill -0 "$(cat "$BROKER_PID")" 2>/dev/null; then
      how="nisshi pid $(cat "$BROKER_PID"), data $BROKER_DIR/broker.db"
    fi
    echo "Kafka       up    $kafka ($how)"
  else
    echo "Kafka       down  $kafka"
  fi
}

# pdftotext (poppler-utils) reads generated PDF reports back in the tests.
tools_up() {
  command -v pdftotext >/dev/null || apt_install poppler-utils
}

# --- Browser (for the console's tests) ----------------------------------------

# Debian's Chromium and its driver, headless, driven on loopback only.
browser_up() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    say "installing Debian's chromium and chromium-driver (the console's browser tests)"
    apt_install chromium chromium-driver
  fi
  say "Browser     $(chromium --version 2>/dev/null | head -1), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
}

OIDC_PROVIDER_VERSION=9.13.3
OIDC_DIR=${HXJOBS_OIDC_DIR:-$HOME/.cache/hxjobs-oidc}

oidc_up() {
  command -v node >/dev/null || apt_install nodejs npm
  if [ ! -f "$OIDC_DIR/node_modules/oidc-provider/package.json" ] ||
     ! grep -q "\"version\": \"$OIDC_PROVIDER_VERSION\"" "$OIDC_DIR/node_modules/oidc-provider/package.json"; then
    say "installing oidc-provider $OIDC_PROVIDER_VERSION from npm into $OIDC_DIR"
    mkdir -p "$OIDC_DIR"
    npm install --prefix "$OIDC_DIR" --no-audit --no-fund --silent "oidc-provider@$OIDC_PROVIDER_VERSION" >&2
  fi
  say "OpenID      oidc-provider $OIDC_PROVIDER_VERSION (node $(node --version)) in $OIDC_DIR"
}

# An S3-compatible server for the object-store tests: the server mode of
# PyPI's moto (prebuilt wheels, pure Python; each test starts its own on a
# free loopback port) and PyPI's duckdb, which reads archived days back.
MOTO_VERSION=5.2.6
DUCKDB_VERSION=2.0.1
S3_VENV=${HXJOBS_S3_VENV:-$HOME/.cache/hxjobs-s3}

s3_up() {
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if ! "$S3_VENV/bin/python" -c "import moto, duckdb, sys; sys.exit(moto.__version__ != '$MOTO_VERSION' or duckdb.__version__ != '$DUCKDB_VERSION')" 2>/dev/null; then
    say "installing moto[server] $MOTO_VERSION and duckdb $DUCKDB_VERSION from PyPI into $S3_VENV"
    python3 -m venv "$S3_VENV"
    "$S3_VENV/bin/pip" install -q --disable-pip-version-check \
      "moto[server]==$MOTO_VERSION" "duckdb==$DUCKDB_VERSION" >&2
  fi
  if [ -n "${HXJOBS_S3_PORT:-}" ]; then
    # One server for trying s3:// by hand (objects are kept in memory).
    if port_open 127.0.0.1 "$HXJOBS_S3_PORT"; then
      say "S3          already listening on 127.0.0.1:$HXJOBS_S3_PORT"
    else
      mkdir -p "$STATE_DIR"
      nohup "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$HXJOBS_S3_PORT" \
        >"$STATE_DIR/moto.log" 2>&1 &
      echo $! >"$STATE_DIR/moto.pid"
      wait_port 127.0.0.1 "$HXJOBS_S3_PORT" "moto_server"
      say "S3          up    http://127.0.0.1:$HXJOBS_S3_PORT (moto $MOTO_VERSION, pid $(cat "$STATE_DIR/moto.pid"))"
      return
    fi
  fi
  say "S3          moto $MOTO_VERSION and duckdb $DUCKDB_VERSION in $S3_VENV"
}

case "${1:-}" in
  browser) browser_up ;;
  oidc) oidc_up ;;
  s3) s3_up ;;
  up)
    tools_up
    postgres_up
    broker_up
    topics_up
    status
    ;;
  down)
    broker_down
    postgres_down
    ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status|browser|oidc|s3" >&2
    exit 2
    ;;
esac
