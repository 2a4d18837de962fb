"""Alembic environment: raw SQL migrations run through psycopg (sync).

The URL comes from, in order: ``-x url=...`` on the command line, the ``sqlalchemy.url``
option set by code (``database.migrate``), or ``DATABASE_URL`` from the bot's settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from database.migrate import sqlalchemy_url

config = context.config


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        from bot.settings import get_settings

        url = get_settings().database_url
    if not url:
        raise SystemExit(
            "DATABASE_URL is not set: export DATABASE_URL=postgresql://user@host:5432/db "
            "(or pass -x url=...) before running alembic"
        )
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), literal_binds=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
