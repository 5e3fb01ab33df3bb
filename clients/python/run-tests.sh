#!/usr/bin/env bash
# CI entry point: installs the client (editable, with its test extra) and runs its tests
# against a real server: $ZS_BIN (default: <repo root>/target/debug/zs). Arguments go to
# pytest.
#
# Inside an active virtualenv it installs there; otherwise into clients/python/.venv (made
# on first run), since Debian's python refuses `pip install` into the system
# (externally-managed-environment). Without the venv module it falls back to the user's
# site-packages.
set -euo pipefail
cd "$(dirname "$0")"

PIP_FLAGS=(--quiet --disable-pip-version-check)
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY=python3
elif [ -x .venv/bin/python ] || python3 -m venv .venv >/dev/null 2>&1; then
  PY=.venv/bin/python
else
  rm -rf .venv
  PY=python3
  if python3 -m pip install --help | grep -q -- --break-system-packages; then
    PIP_FLAGS+=(--user --break-system-packages)
  else
    PIP_FLAGS+=(--user)
  fi
fi
"$PY" -m pip install "${PIP_FLAGS[@]}" -e '.[test]'
exec "$PY" -m pytest -q "$@"
