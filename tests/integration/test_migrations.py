"""Migrations: upgrade head, downgrade base, upgrade head again on a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from database import migrate

EXPECTED_TABLES = {
    "users",
    "service_requests",
    "workflow_transitions",
    "materials",
    "inventory_transactions",
    "error_records",
    "transaction_log",
    "notification_retry_queue",
    "inventory_reconciliation_log",
    "workflow_recovery_log",
    "system_health_snapshots",
    "pending_notifications",
}
EXPECTED_FUNCTIONS = {
    "cleanup_old_error_records",
    "cleanup_old_transaction_logs",
    "cleanup_old_health_snapshots",
    "get_system_health_summary",
}


async def _schema(url: str) -> tuple[set[str], set[str]]:
    conn = await asyncpg.connect(url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        functions = {
            r["proname"]
            for r in await conn.fetch(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public'"
            )
        }
        return tables, functions
    finally:
        await conn.close()


async def test_upgrade_downgrade_upgrade_round_trip(fresh_database_url: str) -> None:
    migrate.upgrade_to_head(fresh_database_url)
    tables, functions = await _schema(fresh_database_url)
    assert tables >= EXPECTED_TABLES
    assert functions >= EXPECTED_FUNCTIONS
    assert migrate.current_revision(fresh_database_url) == migrate.head_revision()
    assert await migrate.database_revision(fresh_database_url) == migrate.head_revision()
    await migrate.ensure_schema_at_head(fresh_database_url)

    migrate.downgrade_to_base(fresh_database_url)
    tables, functions = await _schema(fresh_database_url)
    assert tables <= {"alembic_version"}
    assert not (EXPECTED_FUNCTIONS & functions)
    assert migrate.current_revision(fresh_database_url) is None
    assert await migrate.database_revision(fresh_database_url) is None

    migrate.upgrade_to_head(fresh_database_url)
    tables, functions = await _schema(fresh_database_url)
    assert tables >= EXPECTED_TABLES
    assert functions >= EXPECTED_FUNCTIONS


async def test_schema_check_refuses_an_unmigrated_database(fresh_database_url: str) -> None:
    try:
        await migrate.ensure_schema_at_head(fresh_database_url)
    except migrate.SchemaNotAtHeadError as exc:
        assert "alembic upgrade head" in str(exc)
    else:
        raise AssertionError("an empty database passed the schema check")


async def test_health_summary_and_cleanup_functions_run_on_an_empty_database(
    pool: asyncpg.Pool,
) -> None:
    summary = await pool.fetchval("SELECT get_system_health_summary()")
    assert summary["active_requests"] == 0
    assert summary["notifications"] == {"pending": 0, "retrying": 0, "dead": 0}
    assert await pool.fetchval("SELECT cleanup_old_error_records(1)") == 0
    assert await pool.fetchval("SELECT cleanup_old_transaction_logs(1)") == 0
    assert await pool.fetchval("SELECT cleanup_old_health_snapshots(1)") == 0


def test_the_head_read_from_the_version_files_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused"))
    assert migrate.head_revision() == script.get_current_head()


def test_starting_the_bot_imports_no_migration_machinery_nor_unused_clients() -> None:
    """The revision check of a start-up needs neither alembic nor SQLAlchemy (they cost
    most of a start-up); Sentry's client is imported only when ``SENTRY_DSN`` is set."""
    code = (
        "import sys, bot.app, bot.lifecycle, bot.__main__; print(sorted({m.split('.')[0] "
        "for m in sys.modules} & {'alembic', 'sqlalchemy', 'sentry_sdk'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
