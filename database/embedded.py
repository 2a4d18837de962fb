"""SQL run through the embedded server's ``psql`` (pgserver), which takes statement text:
values are quoted here, never pasted in raw."""

from __future__ import annotations


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier (double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def database_exists_sql(name: str) -> str:
    """One row when the database ``name`` exists."""
    return f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)};"


def create_database_sql(name: str) -> str:
    """Create the database ``name``."""
    return f"CREATE DATABASE {quote_ident(name)};"
