#!/usr/bin/env bash
# Every test of the project, in one command: the Rust workspace, then the JavaScript client
# (Node, and a page in headless Chromium) and the Python client, both against the `zs`
# binary the workspace just built. `.ci/run` installs what this needs and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
cargo build --locked -p zs-cli
export ZS_BIN="$PWD/target/debug/zs"
# In this script nothing may be skipped for want of a tool (Chromium, a WebSocket listener).
export ZS_REQUIRE_ALL=1

echo "== JavaScript client (clients/js)"
bash clients/js/run-tests.sh
if [ -f clients/python/run-tests.sh ]; then
  echo "== Python client (clients/python)"
  bash clients/python/run-tests.sh
fi
echo "== all tests passed"
