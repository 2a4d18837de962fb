"""asyncpg pool, migrations and repositories: all SQL of the project lives in this package."""
