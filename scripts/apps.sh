#!/bin/sh
# Runs config/apps.toml (a Node cluster app, gunicorn and a background job under one master)
# as shipped: installs gunicorn (pinned in tests/support/pypi/requirements.txt) into
# target/test-venv if it is not there, builds rrbalancer (or takes the one installed), and
# puts gunicorn on PATH.
# Needs node and python3 (with venv). Arguments go to rrbalancer: scripts/apps.sh --env production
set -eu
cd "$(dirname "$0")/.."
venv=target/test-venv
if [ ! -x "$venv/bin/gunicorn" ]; then
    echo "scripts/apps.sh: installing gunicorn into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/support/pypi/requirements.txt
fi
if command -v cargo >/dev/null; then
    cargo build --release --quiet
    bin=target/release/rrbalancer
else
    bin=rrbalancer # installed
fi
PATH="$PWD/$venv/bin:$PATH" exec "$bin" --config config/apps.toml "$@"
