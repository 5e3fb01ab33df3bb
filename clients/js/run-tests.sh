#!/usr/bin/env bash
# CI entry point of the JavaScript client: installs the locked packages and runs the tests
# against a real zs binary ($ZS_BIN, default <repo root>/target/debug/zs).
set -euo pipefail
cd "$(dirname "$0")"
export ZS_BIN="${ZS_BIN:-$(cd ../.. && pwd)/target/debug/zs}"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
npm test --silent
