#!/usr/bin/env bash
# From nothing to a PDF report: services up, build, migrate, produce a week
# of demo events (with some duplicates and malformed input), drain them into
# PostgreSQL exactly once, roll them up by hour, day and week, render the
# weekly summary and print where the PDF is; then start the daemon (its
# scheduler, the API and the web console) in the background and print the
# console's address.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
scripts/services.sh up
# The lean operator build (scripts/dist.sh).
hxjobs=$(scripts/dist.sh)
"$hxjobs" migrate
"$hxjobs" topics create
"$hxjobs" produce-demo --events 100000 --bad-ratio 0.002 --duplicate-ratio 0.001 --seed 42
"$hxjobs" run ingest
"$hxjobs" status
# Hours up to the current one (not yet complete), then whole days, then the
# last complete ISO week.
from=$(date -u -d '8 days ago' +%Y-%m-%d)
"$hxjobs" backfill hxp_hourly_aggregation --from "$from" --to "$(date -u +%Y-%m-%dT%H:00:00)"
"$hxjobs" backfill hxp_daily_aggregation --from "$from" --to "$(date -u +%Y-%m-%d)"
"$hxjobs" tasks test hxp_weekly_aggregation rollup
mkdir -p var/reports
"$hxjobs" capacity > var/reports/capacity-analysis.json
echo "Capacity analysis: $(realpath var/reports/capacity-analysis.json)"
out=$("$hxjobs" report generate --type weekly_summary)
echo "$out"
echo "Weekly summary PDF: $(realpath "$(echo "$out" | tail -1)")"
# The daemon: schedules, API and console on 127.0.0.1:9101 (left running).
if ! (exec 3<>/dev/tcp/127.0.0.1/9101) 2>/dev/null; then
  # Its own session: closing this terminal does not reach it (SIGHUP, sent
  # on purpose, makes it reload its job files).
  setsid "$hxjobs" daemon > var/hxjobs-daemon.log 2>&1 < /dev/null &
  echo $! > var/hxjobs-daemon.pid
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/9101) 2>/dev/null && break
    sleep 0.5
  done
  echo "Daemon: pid $(cat var/hxjobs-daemon.pid), log $(realpath var/hxjobs-daemon.log) (stop it: kill \$(cat var/hxjobs-daemon.pid); reload jobs/: kill -HUP \$(cat var/hxjobs-daemon.pid))"
fi
echo "Web console: http://127.0.0.1:9101/ui/"
