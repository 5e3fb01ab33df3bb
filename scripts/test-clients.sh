#!/usr/bin/env bash
# The tests of the clients in other languages: the JavaScript client (Node, and a page in
# headless Chromium) and the Python client, against the `zs` binary of this workspace. The
# README's test command runs it after `cargo test`; `.ci/run` installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

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
