#!/usr/bin/env bash
# The test suite: brings PostgreSQL up (scripts/services.sh) and a broker of
# the tests' own on 127.0.0.1:19092 with empty storage (so test topics never
# pile up in, or touch, the broker you use), installs the S3-compatible
# server the object-store tests start, then runs every unit and
# integration test against them (the console's in headless Chromium), then the chaos suite (scripts/chaos.sh,
# which restarts the local PostgreSQL). Set KAFKA_BOOTSTRAP_SERVERS to test
# against another broker instead; arguments go to cargo test and skip chaos.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  HXJOBS_STATE_DIR="$HOME/.cache/hxjobs-test-broker" HXJOBS_BROKER_PORT=19092 HXJOBS_BROKER_FRESH=1 \
    scripts/services.sh up
  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092
else
  scripts/services.sh up
fi
# Chromium and ChromeDriver for the console's browser tests.
scripts/services.sh browser
# An OpenID provider (npm oidc-provider) for the console's login tests.
scripts/services.sh oidc
# An S3-compatible server (PyPI moto) and duckdb for the object-store tests.
scripts/services.sh s3
# The checked SQL statements' descriptions (.sqlx/) match the migrations.
if [ $# -eq 0 ]; then
  scripts/sqlx-prepare.sh --check
fi
cargo test --locked --features services "$@"
# The chaos suite (faults against real daemons) with the whole suite only.
if [ $# -eq 0 ]; then
  scripts/chaos.sh
fi
