#!/usr/bin/env bash
# The build operators install: `cargo build --profile dist` (Cargo.toml:
# dependencies without debug info, hxjobs's own code with line tables),
# then the debug sections compressed (zlib), which Rust's backtraces and
# addr2line read as they are. Prints the binary's path. `--bench` builds
# the benchmarks in (`hxjobs bench`, BENCHMARKS.md); the product leaves
# them out.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hxjobs-target}
# Cargo's own progress goes to standard error (the first build takes
# minutes); standard output carries only the path.
features=()
if [ "${1:-}" = "--bench" ]; then
  features=(--features bench)
fi
cargo build --locked --profile dist "${features[@]}" >&2
objcopy --compress-debug-sections=zlib "$CARGO_TARGET_DIR/dist/hxjobs" "$CARGO_TARGET_DIR/dist/hxjobs-lean"
echo "$CARGO_TARGET_DIR/dist/hxjobs-lean"
