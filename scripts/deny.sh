#!/usr/bin/env bash
# The supply chain (deny.toml): licences, sources and banned crates, then
# the RustSec advisories. cargo-deny is installed once (cargo install into
# ~/.cargo/bin, about 2.5 minutes). The advisory database is fetched from
# GitHub; where GitHub cannot be reached, HXJOBS_ADVISORY_DB may name a
# clone of github.com/rustsec/advisory-db. With neither, the advisories
# check says it did not run (and everything else still fails the build).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "deny: $*" >&2; }
if ! command -v cargo-deny >/dev/null; then
  say "installing cargo-deny (once)"
  cargo install --locked cargo-deny@0.20.2
fi
cargo deny --log-level error check licenses sources bans
if [ -n "${HXJOBS_ADVISORY_DB:-}" ]; then
  db=$(mktemp -d)
  trap 'rm -rf "$db"' EXIT
  # cargo-deny 0.20 keeps the default database under this name.
  git clone -q "$HXJOBS_ADVISORY_DB" "$db/advisory-db-3157b0e258782691"
  sed "s|^\[advisories\]|[advisories]\ndb-path = \"$db\"|" deny.toml > "$db/deny.toml"
  cargo deny --log-level error --offline --config "$db/deny.toml" check advisories
elif cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error --offline check advisories
else
  say "advisories NOT checked: the RustSec database could not be fetched (set HXJOBS_ADVISORY_DB to a clone)"
fi
