#!/bin/sh
# CI entry point: installs the client (editable, with its test extra) and runs its tests
# against a real server: $ZS_BIN (default: <repo root>/target/debug/zs).
set -eu
cd "$(dirname "$0")"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec python3 -m pytest -q "$@"
