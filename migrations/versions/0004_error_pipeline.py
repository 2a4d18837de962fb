"""Error pipeline: counters updated in place, the hourly rollup written with them, reference
aliases and flush marks.

- The trigger that kept ``error_hourly_counts`` is dropped: the error pipeline writes the
  rollup in the same statement as the counters (``database.error_records.RECORD_BATCH_SQL``).
- The indexes on ``occurrence_count``, ``last_seen_at`` and ``status`` are dropped and the
  table gets free space on its pages (fillfactor 50), so that a counter update is a HOT
  update (no index entry written). The admin queries that used them scan the table: one
  row per error group.
- ``error_reference_aliases``: a reference a user was shown that is not the group's stored
  one still finds the group.
- ``error_flush_marks``: each writer's last applied flush number, so that a batch retried
  after a lost answer is not counted twice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
DROP TRIGGER IF EXISTS trg_error_records_hourly ON error_records;
DROP FUNCTION IF EXISTS error_records_hourly_rollup();
DROP INDEX IF EXISTS ix_error_records_last_seen;
DROP INDEX IF EXISTS ix_error_records_category_last_seen;
DROP INDEX IF EXISTS ix_error_records_open_count;
ALTER TABLE error_records SET (fillfactor = 50);

CREATE TABLE error_reference_aliases (
    reference  TEXT PRIMARY KEY,
    record_id  BIGINT NOT NULL REFERENCES error_records (id) ON DELETE CASCADE
);
CREATE INDEX ix_error_reference_aliases_record ON error_reference_aliases (record_id);

CREATE TABLE error_flush_marks (
    writer      UUID PRIMARY KEY,
    seq         BIGINT NOT NULL,
    flushed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS error_flush_marks;
DROP TABLE IF EXISTS error_reference_aliases;
ALTER TABLE error_records RESET (fillfactor);
CREATE INDEX ix_error_records_last_seen ON error_records (last_seen_at);
CREATE INDEX ix_error_records_category_last_seen
    ON error_records (category, severity, last_seen_at);
CREATE INDEX ix_error_records_open_count
    ON error_records (occurrence_count DESC) WHERE status <> 'resolved';
CREATE FUNCTION error_records_hourly_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE added BIGINT;
BEGIN
    added := NEW.occurrence_count
             - CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.occurrence_count END;
    IF added > 0 THEN
        INSERT INTO error_hourly_counts AS h (hour, record_id, category, severity, occurrences)
        VALUES (date_trunc('hour', NEW.last_seen_at, 'UTC'), NEW.id, NEW.category,
                NEW.severity, added)
        ON CONFLICT (hour, record_id) DO UPDATE
            SET occurrences = h.occurrences + EXCLUDED.occurrences,
                severity = EXCLUDED.severity;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER trg_error_records_hourly
    AFTER INSERT OR UPDATE OF occurrence_count ON error_records
    FOR EACH ROW EXECUTE FUNCTION error_records_hourly_rollup();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
