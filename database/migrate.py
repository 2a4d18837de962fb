"""Run and check alembic migrations from code (the bot, the tests, ``seed-demo``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


class SchemaNotAtHeadError(RuntimeError):
    """The database schema is not at the alembic head revision; ops must migrate it."""


def sqlalchemy_url(url: str) -> str:
    """Turn a libpq/asyncpg URL (``postgresql://...``) into SQLAlchemy's psycopg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql://" + url[len(prefix) :]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def alembic_config(url: str) -> Config:
    """An alembic ``Config`` for this project bound to ``url``."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # ConfigParser interpolation: a literal % in a password must be doubled
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every pending migration (blocking; call it in a thread from async code)."""
    command.upgrade(alembic_config(url), "head")


def downgrade_to_base(url: str) -> None:
    """Revert every migration (blocking)."""
    command.downgrade(alembic_config(url), "base")


def head_revision() -> str:
    """The head revision id of the migration scripts."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    head = script.get_current_head()
    assert head is not None, "no migration scripts found"
    return head


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for an empty database (blocking)."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_schema_at_head(url: str) -> None:
    """Check that the database is migrated to head (blocking).

    Raises:
        SchemaNotAtHeadError: with a message that tells ops what to run.
    """
    current, head = current_revision(url), head_revision()
    if current != head:
        raise SchemaNotAtHeadError(
            f"database schema is at revision {current or 'none'}, code expects {head}: "
            "run `alembic upgrade head` with the same DATABASE_URL, then start the bot again"
        )
