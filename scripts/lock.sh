#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml: exact versions of every dependency of every
# extra, for every platform and Python 3.11+ (uv's universal resolution). Versions already in
# the lock are kept while they still satisfy pyproject.toml; `scripts/lock.sh --upgrade`
# moves everything to the newest allowed, `--upgrade-package NAME` one package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
UV_VERSION=0.13.8
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -m uv --version 2>/dev/null | grep -q " $UV_VERSION"; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
.venv/bin/python -m uv pip compile pyproject.toml --all-extras --universal \
    --python-version 3.11 --quiet --output-file requirements.lock \
    --custom-compile-command scripts/lock.sh "$@"
echo "requirements.lock refreshed; install with: pip install -c requirements.lock -e '.[...]'"
