#!/usr/bin/env bash
# Install the project with every extra into .venv at the versions of requirements.lock, check
# that the lock matches pyproject.toml, lint, type-check (mypy, configured in pyproject.toml),
# then run every test.
# Tests use TEST_DATABASE_URL when set, else an embedded PostgreSQL; REDIS_URL when set, else
# the machine's Redis at 127.0.0.1:6379 when it answers, else the Redis tests are skipped
# (saying so). The alert rule tests need promtool (Debian's prometheus package).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c requirements.lock -e '.[test,embedded,charts,sentry,redis]'
.venv/bin/python scripts/check_lock.py
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
if [ -z "${REDIS_URL:-}" ] && .venv/bin/python -c "
import redis
redis.Redis(host='127.0.0.1', port=6379, socket_timeout=1, socket_connect_timeout=1).ping()
" 2>/dev/null; then
    export REDIS_URL=redis://127.0.0.1:6379/0
fi
echo "Redis for the tests: ${REDIS_URL:-none (the Redis tests will be skipped)}"
exec .venv/bin/python -m pytest "$@"
