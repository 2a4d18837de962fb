"""Inventory reconciliation log: the action ``refused``.

An admin's fix or acceptance of a discrepancy that was no longer open is recorded as
refused (with its reason), not left out of the log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# PostgreSQL names an unnamed column CHECK <table>_<column>_check.
CONSTRAINT = "inventory_reconciliation_log_action_check"

UPGRADE = f"""
ALTER TABLE inventory_reconciliation_log DROP CONSTRAINT {CONSTRAINT};
ALTER TABLE inventory_reconciliation_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN (
    'detected', 'adjusted', 'reversed', 'accepted', 'skipped', 'failed', 'refused'));
"""

# The older schema has no word for a refusal: such rows become 'skipped' (nothing was
# changed), their reason kept in after_value.
DOWNGRADE = f"""
UPDATE inventory_reconciliation_log
   SET action = 'skipped',
       after_value = coalesce(after_value, '{{}}'::jsonb) || '{{"refused": true}}'::jsonb
 WHERE action = 'refused';
ALTER TABLE inventory_reconciliation_log DROP CONSTRAINT {CONSTRAINT};
ALTER TABLE inventory_reconciliation_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN (
    'detected', 'adjusted', 'reversed', 'accepted', 'skipped', 'failed'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
