#!/usr/bin/env bash
# From nothing to ingested demo data: services up, build, migrate, produce a
# week of demo events (with some duplicates and malformed input), drain them
# into PostgreSQL exactly once, and print what is stored.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
scripts/services.sh up
cargo build --locked --release --quiet
hxjobs="$CARGO_TARGET_DIR/release/hxjobs"
"$hxjobs" migrate
"$hxjobs" topics create
"$hxjobs" produce-demo --events 100000 --bad-ratio 0.002 --duplicate-ratio 0.001 --seed 42
"$hxjobs" run ingest
"$hxjobs" status
