"""Instance heartbeat: ``bot_instances``, one row per live bot process.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
-- Every running instance updates its row every INSTANCE_HEARTBEAT_S seconds and deletes it
-- when it stops; a row not seen for three heartbeats belongs to an instance that died.
-- Read to divide Telegram's rate limits among the instances while Redis is unreachable.
CREATE TABLE bot_instances (
    instance_id   TEXT PRIMARY KEY,
    mode          TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS bot_instances;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
