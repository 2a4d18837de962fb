"""The embedded server's statements quote the database name instead of pasting it in."""

from __future__ import annotations

from database.embedded import create_database_sql, database_exists_sql


def test_a_plain_name() -> None:
    assert database_exists_sql("service_bot") == (
        "SELECT 1 FROM pg_database WHERE datname = 'service_bot';"
    )
    assert create_database_sql("service_bot") == 'CREATE DATABASE "service_bot";'


def test_quotes_in_a_name_stay_inside_the_literal_and_the_identifier() -> None:
    assert database_exists_sql("x'; DROP TABLE users; --") == (
        "SELECT 1 FROM pg_database WHERE datname = 'x''; DROP TABLE users; --';"
    )
    assert create_database_sql('a"b') == 'CREATE DATABASE "a""b";'
