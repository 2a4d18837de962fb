#!/usr/bin/env bash
# Install the project into .venv and run the bot (`scripts/run.sh seed-demo` loads demo data).
# Needs BOT_TOKEN; with DATABASE_URL unset an embedded PostgreSQL is started under DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# install again only when the project's dependencies changed since the last install; the
# versions come from requirements.lock, with the embedded PostgreSQL (the default database)
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] \
    || [ requirements.lock -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c requirements.lock -e '.[embedded]'
    touch .venv/.installed
fi
.venv/bin/python scripts/catalogs.py >/dev/null  # a .po edited since the install
exec .venv/bin/python -m bot "$@"
