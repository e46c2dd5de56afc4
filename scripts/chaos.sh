#!/usr/bin/env bash
# The chaos suite: daemons, the API and backfills on one database and
# broker while jobs run, under faults. Every case asserts on the database.
#   a  PostgreSQL restarted in the middle of runs (two daemons, the API)
#   b  the broker stopped for 20 s in the middle of a drain
#   c  a daemon killed with SIGKILL in the middle of a long shell task
#   d  CPU starvation: heavy rollups and reports at once, stale_after_secs = 5
#   e  a worker whose claim was taken over (moved in SQL)
#   f  a 720-hour backfill SIGKILLed twice and PostgreSQL restarted, then finished
#   g  continuous ingest by two daemons while PostgreSQL restarts, then
#      while every session of theirs is terminated (pg_terminate_backend)
# Run by scripts/test.sh after the tests (services already up); alone:
#   scripts/chaos.sh [a b c d e f]
# It restarts the local PostgreSQL cluster (cases a and f): do not run it
# against a database that serves anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
cargo build --locked --quiet --features services --bin hxjobs
bin=$CARGO_TARGET_DIR/debug/hxjobs
broker=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:19092}
admin=postgres://hxjobs:hxjobs@127.0.0.1:5432/hxjobs
work=$(mktemp -d /tmp/hxjobs-chaos.XXXXXX)
failures=0

say() { printf 'chaos: %s\n' "$*" >&2; }
cleanup() {
  [ -f "$work/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  pkill -9 -f "$work" 2>/dev/null || true
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------

db_url() { echo "postgres://hxjobs:hxjobs@127.0.0.1:5432/hxjobs_chaos_$1"; }
q() { psql "$(db_url "$case")" -qtAX -c "$1"; }

fresh_db() {
  PGOPTIONS="-c client_min_messages=warning" psql "$admin" -qtAX -c "DROP DATABASE IF EXISTS hxjobs_chaos_$1 WITH (FORCE)" >/dev/null
  psql "$admin" -qtAX -c "CREATE DATABASE hxjobs_chaos_$1" >/dev/null
}

# config <case> [stale_after_secs] [broker]: a config file of the case's own.
config() {
  local dir=$work/$1
  mkdir -p "$dir/jobs" "$dir/reports"
  cat >"$dir/hxjobs.toml" <<EOF
[kafka]
bootstrap_servers = "${3:-$broker}"
group_id = "chaos-$1-$$"
[topics]
llm_requests = "chaos-$1-$$-llm"
user_feedback = "chaos-$1-$$-fb"
system_metrics = "chaos-$1-$$-sys"
business_events = "chaos-$1-$$-biz"
error_events = "chaos-$1-$$-err"
dead_letter = "chaos-$1-$$-dlq"
partitions = 2
[database]
url = "$(db_url "$1")"
max_connections = 8
[jobs]
dir = "$dir/jobs"
[scheduler]
poll_secs = 1
heartbeat_secs = 1
stale_after_secs = ${2:-5}
max_run_attempts = 5
max_parallel_runs = 4
shutdown_grace_secs = 2
[rollups]
ready_grace_secs = 0
[api]
host = "127.0.0.1"
port = $((19300 + $(printf '%d' "'$1")))
[reports]
definitions_dir = "$PWD/reports"
output_dir = "$dir/reports"
[live_stats]
enabled = false
EOF
  echo "$dir/hxjobs.toml"
}

hx() { HXJOBS_CONFIG=$cfg "$bin" "$@"; }

# start <log name> <hxjobs args...>: in the background; prints its pid.
start() {
  local name=$1
  shift
  HXJOBS_CONFIG=$cfg "$bin" "$@" >"$work/$case/$name.log" 2>&1 &
  echo $! >>"$work/pids"
  echo $!
}

# wait_for <seconds> <SQL yielding t>: until the database says so.
wait_for() {
  local until=$((SECONDS + $1))
  while [ $SECONDS -lt $until ]; do
    [ "$(q "$2" 2>/dev/null || true)" = t ] && return 0
    sleep 0.5
  done
  say "case $case: timed out after $1 s waiting for: $2"
  return 1
}

check() { # check <what> <expected> <actual>
  if [ "$2" = "$3" ]; then
    say "case $case: ok: $1 ($3)"
  else
    say "case $case: FAILED: $1: expected $2, got $3"
    failures=$((failures + 1))
  fi
}

restart_postgres() {
  local cluster
  cluster=$(pg_lsclusters --no-header | awk 'NR == 1 {print $1, $2}')
  # shellcheck disable=SC2086
  pg_ctlcluster $cluster restart -m fast
  say "case $case: PostgreSQL restarted"
}

minutes_ago() { date -u -d "@$(($(date +%s) / 60 * 60 - $1 * 60))" +%Y-%m-%dT%H:%M:%SZ; }

# A job writing one row per (task, interval) into chaos_effects: any task
# that ran twice for an interval shows up as a second row.
effects_table() {
  q "CREATE TABLE IF NOT EXISTS chaos_effects (job text, task text, interval_start timestamptz, at timestamptz DEFAULT now())" >/dev/null
}
sql_task() { # sql_task <name> <depends_on> <sleep secs>
  cat <<EOF
[tasks.$1]
kind = "sql"
sql = "INSERT INTO chaos_effects (job, task, interval_start) VALUES ('{{ job }}', '$1', '{{ interval_start }}'); SELECT pg_sleep($3)"
depends_on = [$2]
retries = 5
retry_delay_secs = 1
EOF
}
twice_or_more() { # rows of chaos_effects for a (task, interval) other than exactly one
  q "SELECT count(*) FROM (SELECT task, interval_start FROM chaos_effects WHERE job = '$1'
      GROUP BY 1, 2 HAVING count(*) <> 1) d"
}

# --- cases -------------------------------------------------------------------

case_a() {
  fresh_db a
  cfg=$(config a)
  hx migrate >/dev/null
  effects_table
  local from cutoff
  from=$(minutes_ago 30)
  cutoff=$(minutes_ago 1)
  {
    cat <<EOF
name = "chaos_a"
schedule = "* * * * *"
interval = "minute"
start_date = "$from"
max_active_runs = 4
[catchup]
policy = "all"
max_intervals = 100
EOF
    sql_task t1 "" 0.5
    sql_task t2 '"t1"' 0.5
    sql_task t3 '"t2"' 0.5
  } >"$work/a/jobs/chaos_a.toml"
  local d1 d2 api
  d1=$(start daemon1 daemon --no-api)
  d2=$(start daemon2 daemon --no-api)
  api=$(start api serve)
  wait_for 60 "SELECT count(*) >= 4 FROM job_runs WHERE state = 'success'"
  restart_postgres
  wait_for 240 "SELECT count(*) = 0 FROM job_runs WHERE interval_start < '$cutoff' AND state <> 'success'"
  local expected
  expected=$(q "SELECT count(*) FROM generate_series('$from'::timestamptz, '$cutoff'::timestamptz - interval '1 minute', interval '1 minute')")
  check "every interval ended succeeded once" "$expected" \
    "$(q "SELECT count(*) FROM job_runs WHERE interval_start < '$cutoff' AND state = 'success'")"
  check "each task's effect exactly once per interval" "$((expected * 3))" \
    "$(q "SELECT count(DISTINCT (task, interval_start)) FROM chaos_effects WHERE interval_start < '$cutoff'")"
  check "no effect written twice" 0 "$(twice_or_more chaos_a)"
  check "both daemons and the API survived" "alive" \
    "$(kill -0 "$d1" && kill -0 "$d2" && kill -0 "$api" && echo alive)"
  kill "$d1" "$d2" "$api"
  wait "$d1" "$d2" "$api" 2>/dev/null || true
}

case_b() {
  local port=19094 state=$HOME/.cache/hxjobs-chaos-broker
  HXJOBS_STATE_DIR=$state HXJOBS_BROKER_PORT=$port HXJOBS_BROKER_FRESH=1 scripts/services.sh up >"$work/services.log" 2>&1
  fresh_db b
  cfg=$(config b 5 "127.0.0.1:$port")
  hx migrate >/dev/null
  hx topics create >/dev/null
  hx produce-demo --events 150000 --seed 7 >/dev/null 2>&1
  ingest_job >"$work/b/jobs/ingest.toml"
  (
    status=0
    hx run ingest >"$work/b/ingest.log" 2>&1 || status=$?
    echo "$status" >"$work/b/ingest.status"
  ) &
  wait_for 120 "SELECT count(*) > 0 FROM events"
  kill "$(cat "$state/broker/nisshi.pid")"
  say "case b: broker stopped at $(q "SELECT count(*) FROM events") events stored"
  sleep 20
  HXJOBS_STATE_DIR=$state HXJOBS_BROKER_PORT=$port scripts/services.sh up >>"$work/services.log" 2>&1
  say "case b: broker started again"
  for _ in $(seq 1 600); do [ -f "$work/b/ingest.status" ] && break; sleep 0.5; done
  check "the drain resumed and finished" 0 "$(cat "$work/b/ingest.status" 2>/dev/null || echo "still running")"
  check "every event stored" 150000 "$(q "SELECT count(*) FROM events")"
  check "every event stored once" 150000 "$(q "SELECT count(DISTINCT event_id) FROM events")"
  check "no gap recorded" 0 "$(q "SELECT count(*) FROM ingest_gaps")"
  kill "$(cat "$state/broker/nisshi.pid")" 2>/dev/null || true
}

ingest_job() {
  cat <<EOF
name = "ingest"
schedule = "0 0 1 1 *"
interval = "minute"
start_date = "2026-01-01"
[tasks.ingest]
kind = "ingest"
retries = 3
timeout_secs = 600
EOF
}

# A shell task that records its process group, sleeps, then writes its
# effect; and a sql task after it.
long_shell_job() { # long_shell_job <case> <sleep secs>
  cat <<EOF
name = "chaos_$1"
schedule = "0 * * * *"
interval = "hour"
start_date = "$(minutes_ago 120)"
[catchup]
policy = "latest"
[tasks.s1]
kind = "shell"
command = "ps -o pgid= -p \$\$ | tr -d ' ' > $work/$1/pgid.\$HXJOBS_RUN_ID.\$HXJOBS_TRY; sleep $2; psql '$(db_url "$1")' -qc \"INSERT INTO chaos_effects (job, task, interval_start) VALUES ('chaos_$1', 's1', '{{ interval_start }}')\""
timeout_secs = 120
$(sql_task s2 '"s1"' 0)
EOF
}

# start_long_shell <case> <log name>: a daemon running the case's long
# shell job; waits until its task s1 runs and prints "<daemon pid> <pgid>".
start_long_shell() {
  local dm
  dm=$(start "$2" daemon --no-api)
  wait_for 60 "SELECT count(*) = 1 FROM task_attempts WHERE task = 's1' AND outcome = 'running'" >&2
  sleep 1
  echo "$dm $(cat "$work/$1"/pgid.* | head -1)"
}

group_gone() { # group_gone <pgid>: within 5 s
  for _ in $(seq 1 20); do
    pgrep -g "$1" >/dev/null || { echo gone; return; }
    sleep 0.25
  done
  echo "still running: $(pgrep -g "$1" | tr '\n' ' ')"
}

case_c() {
  fresh_db c
  cfg=$(config c 5)
  hx migrate >/dev/null
  effects_table
  long_shell_job c 12 >"$work/c/jobs/chaos_c.toml"
  local a b pgid
  read -r a pgid < <(start_long_shell c daemon1)
  b=$(start daemon2 daemon --no-api)
  kill -9 "$a"
  say "case c: daemon 1 killed with SIGKILL in task s1 (process group $pgid)"
  check "the killed task's process group is gone" gone "$(group_gone "$pgid")"
  wait_for 90 "SELECT state = 'success' FROM job_runs ORDER BY id LIMIT 1"
  check "the run succeeded under the second claim" "success 2" \
    "$(q "SELECT state || ' ' || attempts FROM job_runs ORDER BY id LIMIT 1")"
  check "one succeeded attempt per task" "s1 1|s2 1" \
    "$(q "SELECT string_agg(task || ' ' || n, '|' ORDER BY task) FROM (SELECT task, count(*) n FROM task_attempts WHERE outcome = 'success' GROUP BY task) x")"
  check "the killed worker's attempt recorded as lost" "s1 1 lost" \
    "$(q "SELECT task || ' ' || claim || ' ' || outcome FROM task_attempts WHERE outcome <> 'success'")"
  check "each task's effect once" "s1 1|s2 1" \
    "$(q "SELECT string_agg(task || ' ' || n, '|' ORDER BY task) FROM (SELECT task, count(*) n FROM chaos_effects GROUP BY task) x")"
  kill "$b"
  wait "$b" 2>/dev/null || true
}

case_d() {
  fresh_db d
  cfg=$(config d 5)
  hx migrate >/dev/null
  hx topics create >/dev/null
  sed -i 's/^max_parallel_runs = 4/max_parallel_runs = 6/' "$cfg"
  hx produce-demo --events 100000 --from "$(date -u -d '5 days ago' +%Y-%m-%d)" --to "$(date -u +%Y-%m-%d)" --seed 11 >/dev/null 2>&1
  ingest_job >"$work/d/jobs/ingest.toml"
  hx run ingest >/dev/null
  rm "$work/d/jobs/ingest.toml"
  check "events to roll up" 100000 "$(q "SELECT count(*) FROM events")"
  local day
  day=$(date -u -d '5 days ago' +%Y-%m-%d)
  for grain in day; do
    cat >"$work/d/jobs/rollup_$grain.toml" <<EOF
name = "rollup_$grain"
schedule = "0 0 * * *"
interval = "$grain"
start_date = "$day"
max_active_runs = 4
[catchup]
policy = "all"
[tasks.rollup]
kind = "aggregate"
EOF
  done
  cat >"$work/d/jobs/report_daily.toml" <<EOF
name = "report_daily"
schedule = "0 0 * * *"
interval = "day"
start_date = "$(date -u -d '2 days ago' +%Y-%m-%d)"
max_active_runs = 2
[catchup]
policy = "all"
[tasks.report]
kind = "report"
report = "daily_summary"
EOF
  # Two busy loops per core take the CPU the runs need.
  local burners=()
  for _ in 1 2 3 4; do
    (while :; do :; done) &
    burners+=($!)
  done
  local dm
  dm=$(start daemon daemon --no-api)
  wait_for 300 "SELECT count(*) = 7 AND bool_and(state = 'success') FROM job_runs WHERE job <> 'ingest'" || true
  kill "${burners[@]}"
  check "every run succeeded" "7 7" \
    "$(q "SELECT count(*) || ' ' || count(*) FILTER (WHERE state = 'success') FROM job_runs WHERE job <> 'ingest'")"
  check "no run was reaped while its worker lived" 0 \
    "$(q "SELECT count(*) FROM job_runs WHERE attempts <> 1 OR error LIKE '%heartbeat%'")"
  check "the day rollups hold every event" 100000 \
    "$(q "SELECT sum(event_count) FROM rollups WHERE grain = 'day'")"
  check "no attempt lost" 0 "$(q "SELECT count(*) FROM task_attempts WHERE outcome = 'lost'")"
  kill "$dm"
  wait "$dm" 2>/dev/null || true
}

case_e() {
  fresh_db e
  cfg=$(config e 60)
  hx migrate >/dev/null
  effects_table
  long_shell_job e 20 >"$work/e/jobs/chaos_e.toml"
  local dm pgid
  read -r dm pgid < <(start_long_shell e daemon)
  local before
  before=$(q "SELECT state || ' ' || attempt || ' ' || COALESCE(finished_at::text, '-') FROM task_instances ORDER BY task")
  q "UPDATE job_runs SET attempts = attempts + 1 WHERE state = 'running'" >/dev/null
  say "case e: the run's claim moved in SQL (process group $pgid)"
  check "the fenced worker killed its task" gone "$(group_gone "$pgid")"
  sleep 2
  check "it wrote no task state after" "$before" \
    "$(q "SELECT state || ' ' || attempt || ' ' || COALESCE(finished_at::text, '-') FROM task_instances ORDER BY task")"
  check "nor the run's outcome" "running -" \
    "$(q "SELECT state || ' ' || COALESCE(finished_at::text, '-') FROM job_runs ORDER BY id LIMIT 1")"
  check "its task's effect never happened" 0 "$(q "SELECT count(*) FROM chaos_effects")"
  check "the daemon lives on" alive "$(kill -0 "$dm" && echo alive)"
  kill "$dm"
  wait "$dm" 2>/dev/null || true
}

case_f() {
  fresh_db f
  cfg=$(config f 5)
  hx migrate >/dev/null
  effects_table
  {
    cat <<EOF
name = "chaos_f"
schedule = "0 * * * *"
interval = "hour"
start_date = "2026-01-01"
EOF
    sql_task t1 "" 0
    sql_task t2 '"t1"' 0
    sql_task t3 '"t2"' 0
  } >"$work/f/jobs/chaos_f.toml"
  local args=(backfill chaos_f --from 2026-02-01 --to 2026-03-03 --parallel 4) bf
  local stored=0
  for round in 1 2; do
    bf=$(start "backfill$round" "${args[@]}")
    # Run again at once after a kill, the backfill resumes (it waits for the
    # dead one's heartbeat to go stale): not moving is a failure.
    wait_for 120 "SELECT count(*) >= $((stored + 60)) FROM job_runs WHERE state = 'success'" ||
      return 1
    stored=$(q "SELECT count(*) FROM job_runs WHERE state = 'success'")
    kill -9 "$bf"
    say "case f: backfill SIGKILLed at $(q "SELECT count(*) FROM job_runs WHERE state = 'success'") runs"
  done
  bf=$(start backfill3 "${args[@]}")
  # 720 intervals in all: a fast machine may have few left by now.
  local want=$((stored + 60 > 720 ? 720 : stored + 60))
  wait_for 120 "SELECT count(*) >= $want FROM job_runs WHERE state = 'success'"
  restart_postgres
  for _ in $(seq 1 240); do kill -0 "$bf" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$bf" 2>/dev/null || true
  # Runs the killed processes held are reaped once stale; run to the end.
  local status=1
  for round in 4 5 6; do
    sleep 6
    status=0
    hx "${args[@]}" >"$work/f/backfill$round.log" 2>&1 || status=$?
    [ "$status" = 0 ] && break
  done
  check "the last backfill finished the range" 0 "$status"
  check "every interval succeeded" 720 "$(q "SELECT count(*) FROM job_runs WHERE state = 'success'")"
  check "each task's row once per interval" 2160 \
    "$(q "SELECT count(DISTINCT (task, interval_start)) FROM chaos_effects")"
  check "no row written twice" 0 "$(twice_or_more chaos_f)"
}

case_g() {
  fresh_db g
  cfg=$(config g 5)
  hx migrate >/dev/null
  hx topics create >/dev/null
  sed -i 's/^\[rollups\]/[ingest]\nstale_after_secs = 4\nmax_batch_delay_ms = 200\nstalled_after_secs = 5\n[rollups]/' "$cfg"
  local d1 d2 api port
  port=$((19300 + $(printf '%d' "'g")))
  export HXJOBS_INGEST_MODE=continuous
  d1=$(start daemon1 daemon --no-api)
  d2=$(start daemon2 daemon)
  unset HXJOBS_INGEST_MODE
  hx produce-demo --events 20000 --seed 21 >/dev/null 2>&1
  wait_for 120 "SELECT count(*) > 0 FROM events"
  restart_postgres
  hx produce-demo --events 20000 --seed 22 >/dev/null 2>&1
  wait_for 120 "SELECT count(*) >= 30000 FROM events" || true
  q "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()) t" >/dev/null
  say "case g: every session of the daemons terminated"
  hx produce-demo --events 20000 --seed 23 >/dev/null 2>&1
  # Three seeds: 60,000 distinct events, none malformed.
  wait_for 180 "SELECT count(*) >= 60000 FROM events" || true
  check "every event stored" 60000 "$(q "SELECT count(*) FROM events")"
  check "every event stored once" 60000 "$(q "SELECT count(DISTINCT event_id) FROM events")"
  check "no gap recorded" 0 "$(q "SELECT count(*) FROM ingest_gaps")"
  check "every partition owned by a live daemon" 0 \
    "$(q "SELECT count(*) FROM consumer_offsets WHERE owner IS NULL OR lease_expires_at < now()")"
  local health=""
  for _ in $(seq 1 40); do
    health=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
    [ "$health" = 200 ] && break
    sleep 0.5
  done
  check "/health is healthy with ingest moving" 200 "$health"
  check "both daemons survived" alive "$(kill -0 "$d1" && kill -0 "$d2" && echo alive)"
  kill "$d1" "$d2"
  wait "$d1" "$d2" 2>/dev/null || true
}

# --- main --------------------------------------------------------------------

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(a b c d e f g)
for case in "${cases[@]}"; do
  say "case $case"
  started=$SECONDS
  "case_$case" || { say "case $case: FAILED (it did not run to the end)"; failures=$((failures + 1)); }
  say "case $case: $((SECONDS - started)) s"
done
if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed; logs in $work"
  exit 1
fi
rm -rf "$work"
say "all cases passed"
