#!/usr/bin/env bash
# hxjobs's checked statements (sqlx::query! and friends) are compiled
# against the schema the migrations make. Builds read the statements'
# descriptions from .sqlx/ (SQLX_OFFLINE, .cargo/config.toml), so nothing
# needs a database to compile; this script writes them anew:
#
#   scripts/sqlx-prepare.sh          migrate a scratch database, compile
#                                    against it, replace .sqlx/ (commit it)
#   scripts/sqlx-prepare.sh --check  the same into a scratch directory, and
#                                    fail if .sqlx/ differs (CI runs this)
#
# A renamed column or a statement edited without running this fails here,
# not in a run at 3 a.m. Needs PostgreSQL (scripts/services.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
export PGOPTIONS="--client-min-messages=warning"
base=${DATABASE_URL:-postgres://hxjobs:hxjobs@127.0.0.1:5432/hxjobs}
scratch_db=hxjobs_sqlx_prepare
scratch_url="${base%/*}/$scratch_db"

psql -q -v ON_ERROR_STOP=1 "$base" -c "DROP DATABASE IF EXISTS $scratch_db" \
  -c "CREATE DATABASE $scratch_db" >/dev/null
for m in migrations/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$scratch_url" -f "$m" >/dev/null
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Every statement is expanded again (the crate recompiles), online.
touch src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$scratch_url" SQLX_OFFLINE_DIR="$out" \
  cargo check --locked --features services --lib --quiet
psql -q "$base" -c "DROP DATABASE IF EXISTS $scratch_db" >/dev/null

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    diff -r "$out" .sqlx | head -20 >&2 || true
    echo "sqlx-prepare: .sqlx/ does not describe the statements in src/ against the migrations; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo "sqlx-prepare: .sqlx/ matches $(ls "$out" | wc -l) checked statements"
else
  rm -rf .sqlx
  mkdir .sqlx
  cp "$out"/*.json .sqlx/
  echo "sqlx-prepare: wrote $(ls .sqlx | wc -l) statements' descriptions to .sqlx/"
fi
