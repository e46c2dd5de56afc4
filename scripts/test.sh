#!/usr/bin/env bash
# The test suite: brings the services up (scripts/services.sh), then runs
# every unit and integration test against them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
scripts/services.sh up
cargo test --locked "$@"
