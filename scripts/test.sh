#!/usr/bin/env bash
# The one test command: installs what the tests need, then checks formatting,
# lints, and runs every test (unit, property, integration with real
# redis-server and redis-cli processes).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz target is its own workspace (it runs on nightly flags); checking
# that it still compiles keeps it from falling behind the command core.
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # The cluster tests once more on optimised nodes, as users run them:
  # handover races show at release speed that debug builds hide.
  cargo nextest run --release --locked --no-fail-fast --test cluster
else
  cargo test --workspace --locked --no-fail-fast
  cargo test --release --locked --no-fail-fast --test cluster
fi
