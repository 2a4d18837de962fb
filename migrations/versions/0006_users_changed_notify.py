"""NOTIFY ``users_changed`` when a ``users`` row changes or goes.

Each bot process keeps the rows of senders with the client role in memory
(``recovery.user_cache``) and drops one when PostgreSQL says it changed: the payload is the
row's ``telegram_id`` (the old and the new one when it changes), ``*`` after a TRUNCATE.
An INSERT sends nothing: a row that did not exist is in no cache. Repeats within one
transaction are folded by PostgreSQL; the notification leaves at commit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION notify_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('users_changed', '*');
        RETURN NULL;
    END IF;
    PERFORM pg_notify('users_changed', OLD.telegram_id::text);
    IF TG_OP = 'UPDATE' AND NEW.telegram_id IS DISTINCT FROM OLD.telegram_id THEN
        PERFORM pg_notify('users_changed', NEW.telegram_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER trg_users_changed
    AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_users_changed();
CREATE TRIGGER trg_users_truncated
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_users_changed();
"""

DOWNGRADE = """
DROP TRIGGER trg_users_truncated ON users;
DROP TRIGGER trg_users_changed ON users;
DROP FUNCTION notify_users_changed();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
