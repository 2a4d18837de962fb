"""Run and check alembic migrations from code (the bot, the tests, ``seed-demo``).

alembic and SQLAlchemy are imported only to migrate (``upgrade_to_head``,
``downgrade_to_base``, ``current_revision``): a start-up against an external database only
checks the revision, which needs neither. ``head_revision`` reads the ``revision`` and
``down_revision`` assignments of the version files (the head is the revision no other one
follows); ``database_revision`` reads ``alembic_version`` with asyncpg.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

import asyncpg

from database import readiness

if TYPE_CHECKING:
    from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
VERSIONS_DIR = PROJECT_ROOT / "migrations" / "versions"


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
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # ConfigParser interpolation: a literal % in a password must be doubled
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every pending migration (blocking; call it in a thread from async code)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def downgrade_to_base(url: str) -> None:
    """Revert every migration (blocking)."""
    from alembic import command

    command.downgrade(alembic_config(url), "base")


def _assigned(tree: ast.Module, name: str) -> object:
    """The literal value assigned to ``name`` at module level (``revision: str = "x"``)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
            and node.value is not None
        ):
            return ast.literal_eval(node.value)
    return None


@cache
def head_revision() -> str:
    """The head revision id of the migration scripts (read from ``migrations/versions``
    without importing alembic).

    Raises:
        RuntimeError: no migration scripts, or more than one head.
    """
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in VERSIONS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        revision = _assigned(tree, "revision")
        if not isinstance(revision, str):
            continue
        revisions.add(revision)
        down = _assigned(tree, "down_revision")
        # down_revision is None, a str, or a tuple of str (a merge); literal_eval gives object
        followed.update([down] if isinstance(down, str) else down or ())  # type: ignore[arg-type]
    heads = revisions - followed
    if len(heads) != 1:
        raise RuntimeError(f"migration scripts have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for an empty database (blocking; alembic's
    own reading, for tools and tests)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


async def database_revision(url: str, timeout_s: float = 30.0) -> str | None:
    """The revision in ``alembic_version``, or None for an unmigrated database.

    Raises:
        OSError, asyncpg.PostgresError: the database cannot be reached.
    """
    conn = await asyncpg.connect(url, timeout=timeout_s)
    try:
        if not await conn.fetchval(readiness.HAS_VERSION_TABLE_SQL):
            return None
        return cast(str | None, await conn.fetchval(readiness.REVISION_SQL))
    finally:
        await conn.close()


async def ensure_schema_at_head(url: str) -> None:
    """Check that the database is migrated to head.

    Raises:
        SchemaNotAtHeadError: with a message that tells ops what to run.
    """
    current, head = await database_revision(url), head_revision()
    if current != head:
        raise SchemaNotAtHeadError(
            f"database schema is at revision {current or 'none'}, code expects {head}: "
            "run `alembic upgrade head` with the same DATABASE_URL, then start the bot again"
        )
