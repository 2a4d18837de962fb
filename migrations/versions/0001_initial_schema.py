"""Initial schema: base workflow tables, the eight recovery tables and their SQL functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# --- Base workflow --------------------------------------------------------------------------
BASE_WORKFLOW = """
CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    telegram_id     BIGINT NOT NULL UNIQUE,
    full_name       TEXT NOT NULL DEFAULT '',
    username        TEXT,
    phone           TEXT,
    role            TEXT NOT NULL DEFAULT 'client' CHECK (role IN (
                        'client', 'manager', 'junior_manager', 'controller',
                        'technician', 'warehouse', 'admin')),
    language        TEXT NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'ru', 'uz')),
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    -- set when Telegram answered 403 (blocked, deactivated) or 400 chat not found;
    -- cleared when the user writes to the bot again
    blocked_bot_at  TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_users_role_active ON users (role) WHERE is_active AND blocked_bot_at IS NULL;

CREATE TABLE service_requests (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_type    TEXT NOT NULL CHECK (workflow_type IN ('connection', 'repair')),
    client_id        BIGINT NOT NULL REFERENCES users (id),
    description      TEXT NOT NULL DEFAULT '',
    address          TEXT NOT NULL DEFAULT '',
    current_state    TEXT NOT NULL,
    owner_role       TEXT,  -- the role that owns the current state ("current_role" is reserved)
    assignee_id      BIGINT REFERENCES users (id),
    status           TEXT NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'completed', 'cancelled')),
    -- optimistic locking: every state change increments it and checks the value it read
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version > 0),
    state_entered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ
);
-- stuck detection: one range scan per (workflow type, state) of the requests in it longer
-- than its deadline, in time order (database/stuck.py). No index on state_entered_at alone:
-- the planner cannot see the per-state values through the LATERAL join and would prefer it,
-- then read every late request of every state once per state.
CREATE INDEX ix_requests_active_type_state
    ON service_requests (workflow_type, current_state, state_entered_at, id)
    WHERE status = 'active';
CREATE INDEX ix_requests_active_assignee
    ON service_requests (assignee_id) WHERE status = 'active';
CREATE INDEX ix_requests_active_role
    ON service_requests (owner_role, id) WHERE status = 'active';
CREATE INDEX ix_requests_client ON service_requests (client_id, id);

CREATE TABLE workflow_transitions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     BIGINT NOT NULL REFERENCES service_requests (id) ON DELETE CASCADE,
    from_state     TEXT,
    to_state       TEXT NOT NULL,
    from_role      TEXT,
    to_role        TEXT,
    from_assignee_id BIGINT REFERENCES users (id),
    to_assignee_id   BIGINT REFERENCES users (id),
    actor_id       BIGINT REFERENCES users (id),
    kind           TEXT NOT NULL CHECK (kind IN (
                       'create', 'normal', 'assign', 'force', 'reset', 'complete', 'reassign')),
    reason         TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_transitions_request ON workflow_transitions (request_id, id);

CREATE TABLE materials (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    unit        TEXT NOT NULL DEFAULT 'pcs',
    -- may go negative only through external corruption: reconciliation finds it
    balance     BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_materials_negative ON materials (id) WHERE balance < 0;
"""

# --- Recovery tables ------------------------------------------------------------------------
RECOVERY = """
-- The ledger: source of truth for stock. quantity is signed (receipt/return > 0, issue < 0,
-- adjustment either sign). request_id has no foreign key on purpose: reconciliation must be
-- able to see issues for requests that no longer exist (orphans).
CREATE TABLE inventory_transactions (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    material_id      BIGINT NOT NULL REFERENCES materials (id),
    kind             TEXT NOT NULL CHECK (kind IN ('receipt', 'issue', 'return', 'adjustment')),
    quantity         BIGINT NOT NULL CHECK (quantity <> 0),
    request_id       BIGINT,
    actor_id         BIGINT REFERENCES users (id),
    -- idempotency reference: a retried use with the same key is not counted twice
    idempotency_key  TEXT NOT NULL,
    reverses_id      BIGINT REFERENCES inventory_transactions (id),
    -- reference of the source document of an imported row (delivery note line, legacy
    -- system id). Not unique on purpose: an import must not fail on a repeated document;
    -- reconciliation reports a repeated (material_id, external_reference) as a duplicate.
    external_reference TEXT,
    note             TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ux_inventory_tx_idempotency ON inventory_transactions (idempotency_key);
CREATE INDEX ix_inventory_tx_material ON inventory_transactions (material_id) INCLUDE (quantity);
CREATE INDEX ix_inventory_tx_request ON inventory_transactions (request_id)
    WHERE request_id IS NOT NULL;
-- reconciliation: duplicate external references, and "is this row already reversed?"
CREATE INDEX ix_inventory_tx_external_ref
    ON inventory_transactions (material_id, external_reference, id)
    WHERE external_reference IS NOT NULL;
CREATE INDEX ix_inventory_tx_reverses ON inventory_transactions (reverses_id)
    WHERE reverses_id IS NOT NULL;

-- One row per error group (fingerprint); a storm of the same error grows occurrence_count.
CREATE TABLE error_records (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference         TEXT NOT NULL UNIQUE,
    fingerprint       TEXT NOT NULL UNIQUE,
    category          TEXT NOT NULL CHECK (category IN (
                          'transient', 'data', 'business_logic', 'system', 'inventory',
                          'notification')),
    severity          TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    error_type        TEXT NOT NULL,
    message           TEXT NOT NULL,
    location          TEXT,
    stack_trace       TEXT,
    context           JSONB NOT NULL DEFAULT '{}'::jsonb,
    occurrence_count  BIGINT NOT NULL DEFAULT 1,
    first_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    status            TEXT NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'resolved', 'regressed')),
    resolved_at       TIMESTAMPTZ,
    resolved_by       BIGINT,
    last_alerted_at   TIMESTAMPTZ
);
CREATE INDEX ix_error_records_last_seen ON error_records (last_seen_at);
CREATE INDEX ix_error_records_category_last_seen
    ON error_records (category, severity, last_seen_at);
CREATE INDEX ix_error_records_open_count
    ON error_records (occurrence_count DESC) WHERE status <> 'resolved';

-- Audit trail of transactional operations; rows of a rolled-back transaction are written
-- outside it, so they survive the rollback.
CREATE TABLE transaction_log (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  UUID NOT NULL,
    operation       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN (
                        'started', 'committed', 'rolled_back', 'retried', 'failed')),
    steps           JSONB NOT NULL DEFAULT '[]'::jsonb,
    actor_id        BIGINT,
    error_category  TEXT,
    error_message   TEXT,
    attempt         INTEGER NOT NULL DEFAULT 1,
    duration_ms     DOUBLE PRECISION,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_transaction_log_tx ON transaction_log (transaction_id);
CREATE INDEX ix_transaction_log_created ON transaction_log (created_at);
CREATE INDEX ix_transaction_log_status_created ON transaction_log (status, created_at);

-- The transactional outbox: written in the same transaction as the change that causes it.
CREATE TABLE pending_notifications (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  TEXT NOT NULL,
    recipient_id     BIGINT REFERENCES users (id),
    chat_id          BIGINT NOT NULL,
    template_key     TEXT NOT NULL,
    params           JSONB NOT NULL DEFAULT '{}'::jsonb,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
                         'pending', 'sending', 'sent', 'retrying', 'dead', 'skipped',
                         'discarded')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_by       TEXT,
    lease_until      TIMESTAMPTZ,
    telegram_message_id BIGINT,
    last_error       TEXT,
    dead_reason      TEXT,
    request_id       BIGINT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ
);
CREATE UNIQUE INDEX ux_pending_notifications_idempotency
    ON pending_notifications (idempotency_key);
-- the sender's claim query: due rows, oldest first
CREATE INDEX ix_pending_notifications_due ON pending_notifications (next_attempt_at, id)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX ix_pending_notifications_lease ON pending_notifications (lease_until)
    WHERE status = 'sending';
CREATE INDEX ix_pending_notifications_status ON pending_notifications (status, updated_at);

-- One row per failed delivery attempt scheduled for retry (exponential backoff with jitter).
CREATE TABLE notification_retry_queue (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  BIGINT NOT NULL REFERENCES pending_notifications (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    error_category   TEXT,
    error_code       INTEGER,
    error_message    TEXT,
    retry_at         TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL DEFAULT 'waiting'
                         CHECK (status IN ('waiting', 'done', 'dead', 'cancelled')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_retry_queue_waiting ON notification_retry_queue (retry_at)
    WHERE status = 'waiting';
CREATE INDEX ix_retry_queue_notification ON notification_retry_queue (notification_id, attempt);
-- at most one waiting entry per notification: 'retrying' rows and waiting entries match 1:1
CREATE UNIQUE INDEX ux_retry_queue_one_waiting ON notification_retry_queue (notification_id)
    WHERE status = 'waiting';

-- One row: state of the notification sender shared by every bot instance. paused_until: a
-- Telegram 429 (retry_after) holds every instance's claims; queue_full_since: the retry
-- queue reached its bound at that time (the admins were alerted once for this episode).
CREATE TABLE notification_sender_state (
    id                BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    paused_until      TIMESTAMPTZ,
    queue_full_since  TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO notification_sender_state DEFAULT VALUES;

-- Wake the senders (LISTEN pending_notifications) when new rows commit; statement-level, so
-- a bulk insert sends one notification, and PostgreSQL folds repeats within a transaction.
CREATE FUNCTION notify_pending_notifications() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pending_notifications', '');
    RETURN NULL;
END $$;
CREATE TRIGGER trg_pending_notifications_notify
    AFTER INSERT ON pending_notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notify_pending_notifications();

-- Discrepancies found by inventory reconciliation. At most one open row per fingerprint
-- ('material:<id>', 'orphan:<material>:<request>', 'duplicate:<transaction>'); a row is
-- closed as fixed, accepted (by an admin, with a reason) or resolved (gone by itself).
-- amount: the signed correction a fix writes (balance correction for drift and
-- negative_balance, ledger quantity for the others); an acceptance covers that amount only.
CREATE TABLE inventory_discrepancies (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN (
                         'negative_balance', 'negative_ledger', 'drift',
                         'orphaned_transaction', 'duplicate_reference')),
    material_id      BIGINT NOT NULL REFERENCES materials (id),
    request_id       BIGINT,
    transaction_id   BIGINT REFERENCES inventory_transactions (id),
    amount           BIGINT NOT NULL,
    balance          BIGINT NOT NULL,
    ledger_sum       BIGINT NOT NULL,
    details          JSONB NOT NULL DEFAULT '{}'::jsonb,
    status           TEXT NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'fixed', 'accepted', 'resolved')),
    first_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at        TIMESTAMPTZ,
    closed_by        TEXT,
    reason           TEXT
);
CREATE UNIQUE INDEX ux_inventory_discrepancies_open
    ON inventory_discrepancies (fingerprint) WHERE status = 'open';
CREATE INDEX ix_inventory_discrepancies_open_list
    ON inventory_discrepancies (kind, id) WHERE status = 'open';
CREATE INDEX ix_inventory_discrepancies_accepted
    ON inventory_discrepancies (fingerprint) WHERE status = 'accepted';
CREATE INDEX ix_inventory_discrepancies_material ON inventory_discrepancies (material_id, id);

CREATE TABLE inventory_reconciliation_log (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           UUID NOT NULL,
    material_id      BIGINT REFERENCES materials (id),
    transaction_id   BIGINT REFERENCES inventory_transactions (id),
    discrepancy_id   BIGINT REFERENCES inventory_discrepancies (id),
    discrepancy      TEXT NOT NULL CHECK (discrepancy IN (
                         'negative_balance', 'negative_ledger', 'drift',
                         'orphaned_transaction', 'duplicate_reference')),
    action           TEXT NOT NULL CHECK (action IN (
                         'detected', 'adjusted', 'reversed', 'accepted', 'skipped', 'failed')),
    before_value     JSONB,
    after_value      JSONB,
    actor            TEXT NOT NULL,
    reason           TEXT,
    dry_run          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_reconciliation_log_created ON inventory_reconciliation_log (created_at);
CREATE INDEX ix_reconciliation_log_material ON inventory_reconciliation_log (material_id, id);
CREATE INDEX ix_reconciliation_log_discrepancy ON inventory_reconciliation_log (discrepancy_id)
    WHERE discrepancy_id IS NOT NULL;

CREATE TABLE workflow_recovery_log (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id       BIGINT REFERENCES service_requests (id) ON DELETE SET NULL,
    action           TEXT NOT NULL CHECK (action IN (
                         'force_transition', 'reset_state', 'complete', 'reassign')),
    admin_id         BIGINT,
    admin_telegram_id BIGINT,
    reason           TEXT,
    before_state     JSONB,
    after_state      JSONB,
    success          BOOLEAN NOT NULL,
    error_message    TEXT,
    batch_id         UUID,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_recovery_log_created ON workflow_recovery_log (created_at DESC);
CREATE INDEX ix_recovery_log_request ON workflow_recovery_log (request_id, id);

CREATE TABLE system_health_snapshots (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'critical')),
    metrics     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_health_snapshots_created ON system_health_snapshots (created_at DESC);
"""

# --- Admin dashboard: error rollup, alerts, audit (issue 8) ---------------------------------
DASHBOARD = """
-- Errors per hour per group: error_records keeps one row per group with a cumulative count,
-- so the statistics windows (24 h, 7 days) and the per-hour chart read this rollup. It is
-- kept by a trigger on error_records, whoever records the occurrence. Hours are UTC.
CREATE TABLE error_hourly_counts (
    hour         TIMESTAMPTZ NOT NULL,
    record_id    BIGINT NOT NULL REFERENCES error_records (id) ON DELETE CASCADE,
    category     TEXT NOT NULL,
    severity     TEXT NOT NULL,
    occurrences  BIGINT NOT NULL CHECK (occurrences > 0),
    -- covering: the window queries are index-only scans of one hour range
    PRIMARY KEY (hour, record_id) INCLUDE (category, severity, occurrences)
);
CREATE INDEX ix_error_hourly_record ON error_hourly_counts (record_id);

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

-- Every admin action taken from the dashboard: who, what, on what, before and after.
-- (Workflow recovery actions are in workflow_recovery_log; the history screen shows both.)
CREATE TABLE admin_audit_log (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    admin_id          BIGINT REFERENCES users (id) ON DELETE SET NULL,
    admin_telegram_id BIGINT NOT NULL,
    action            TEXT NOT NULL,
    target_type       TEXT,
    target_id         TEXT,
    before_value      JSONB,
    after_value       JSONB,
    reason            TEXT,
    success           BOOLEAN NOT NULL DEFAULT TRUE,
    error_message     TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_admin_audit_created ON admin_audit_log (created_at DESC, id DESC);

-- The one admin alert path: every alert raised (critical errors, health changes, stuck
-- digests). 'sent' went to the outbox at once, 'queued' waits for the next digest (the rate
-- limit was reached), 'digested' went out in a digest. A repeat of a dedupe_key within the
-- dedupe window is not a new row: it increments duplicates of the last one.
CREATE TABLE admin_alerts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('error', 'health', 'stuck', 'system')),
    dedupe_key    TEXT NOT NULL,
    template_key  TEXT NOT NULL,
    params        JSONB NOT NULL DEFAULT '{}'::jsonb,
    status        TEXT NOT NULL CHECK (status IN ('sent', 'queued', 'digested')),
    duplicates    INTEGER NOT NULL DEFAULT 0,
    recipients    INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at  TIMESTAMPTZ
);
CREATE INDEX ix_admin_alerts_key ON admin_alerts (dedupe_key, created_at DESC);
CREATE INDEX ix_admin_alerts_sent ON admin_alerts (delivered_at) WHERE status <> 'queued';
CREATE INDEX ix_admin_alerts_queued ON admin_alerts (id) WHERE status = 'queued';
CREATE INDEX ix_admin_alerts_created ON admin_alerts (created_at);

-- An admin muted a kind of alert for themselves until muted_until.
CREATE TABLE admin_alert_mutes (
    chat_id      BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('error', 'health', 'stuck', 'system')),
    muted_until  TIMESTAMPTZ NOT NULL,
    muted_by     BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, kind)
);

CREATE FUNCTION cleanup_old_dashboard_data(retention_days INTEGER DEFAULT 30)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE removed INTEGER; total INTEGER := 0;
BEGIN
    DELETE FROM error_hourly_counts WHERE hour < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT; total := total + removed;
    DELETE FROM admin_alerts
     WHERE status <> 'queued' AND created_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT; total := total + removed;
    DELETE FROM admin_alert_mutes WHERE muted_until < now();
    GET DIAGNOSTICS removed = ROW_COUNT; total := total + removed;
    RETURN total;
END $$;
"""

DASHBOARD_DOWNGRADE = """
DROP FUNCTION IF EXISTS cleanup_old_dashboard_data(INTEGER);
DROP TABLE IF EXISTS admin_alert_mutes;
DROP TABLE IF EXISTS admin_alerts;
DROP TABLE IF EXISTS admin_audit_log;
DROP TRIGGER IF EXISTS trg_error_records_hourly ON error_records;
DROP FUNCTION IF EXISTS error_records_hourly_rollup();
DROP TABLE IF EXISTS error_hourly_counts;
"""

# --- Operations: several instances (bot/scheduler.py, middlewares/updates.py) ---------------
OPERATIONS = """
-- One row per periodic job run. slot_start is the start of the interval the run covers
-- (epoch seconds floored to the job's interval, on the database clock). The partial unique
-- index makes "each job runs once per interval across every instance" a constraint: a slot
-- holds at most one running or finished run; an 'abandoned' run (its instance died; marked
-- by the next holder of the job's advisory lock) or a 'cancelled' one (shutdown) does not
-- count, so the slot can be run again.
CREATE TABLE job_runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_name     TEXT NOT NULL,
    slot_start   TIMESTAMPTZ NOT NULL,
    interval_s   DOUBLE PRECISION NOT NULL CHECK (interval_s > 0),
    instance_id  TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'running' CHECK (status IN (
                     'running', 'ok', 'failed', 'abandoned', 'cancelled')),
    result       JSONB,
    error        TEXT,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    duration_s   DOUBLE PRECISION
);
CREATE UNIQUE INDEX ux_job_runs_slot ON job_runs (job_name, slot_start)
    WHERE status IN ('running', 'ok', 'failed');
CREATE INDEX ix_job_runs_running ON job_runs (job_name) WHERE status = 'running';
CREATE INDEX ix_job_runs_job_started ON job_runs (job_name, started_at DESC);
CREATE INDEX ix_job_runs_started ON job_runs (started_at);

-- Update ids already taken by an instance: Telegram redelivers a webhook update whose answer
-- it did not get, possibly to another instance behind the load balancer; the second delivery
-- is skipped. Telegram's update ids are sequential (random after a week without updates),
-- so a retention of days is safe.
CREATE TABLE processed_updates (
    update_id    BIGINT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_processed_updates_received ON processed_updates (received_at);
"""

# --- Stuck workflows and their recovery (issue 7) -------------------------------------------
WORKFLOW_RECOVERY = """
-- inactive-assignee detection: the few users who are inactive or blocked the bot, then
-- their active requests through ix_requests_active_assignee
CREATE INDEX ix_users_unreachable ON users (id) WHERE NOT is_active OR blocked_bot_at IS NOT NULL;

-- Stuck requests the admins were already alerted about: one row per visit of a state
-- (request, state_entered_at), so each newly stuck request is in exactly one digest. No
-- foreign key (a first run marks thousands of rows): the job deletes the rows of requests
-- that left the alerted visit, deleted requests included.
CREATE TABLE stuck_alerts (
    request_id       BIGINT NOT NULL,
    state_entered_at TIMESTAMPTZ NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    alerted_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, state_entered_at)
);

-- Which visit of a state consumed a material: an issue for a request is stamped with the
-- request's state and state_entered_at at the moment of the issue (the use holds the request
-- row FOR SHARE, so they cannot move meanwhile). A reset reverses exactly the issues of the
-- visit it undoes. NULL for rows without a request (or for a request that does not exist).
-- (ix_inventory_tx_reverses, above, serves "what already reverses this issue?")
ALTER TABLE inventory_transactions
    ADD COLUMN request_state TEXT,
    ADD COLUMN request_state_entered_at TIMESTAMPTZ;

CREATE FUNCTION stamp_inventory_request_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.current_state, r.state_entered_at
      INTO NEW.request_state, NEW.request_state_entered_at
      FROM service_requests r WHERE r.id = NEW.request_id;
    RETURN NEW;
END $$;
CREATE TRIGGER tr_inventory_tx_request_state
    BEFORE INSERT ON inventory_transactions
    FOR EACH ROW WHEN (NEW.request_id IS NOT NULL AND NEW.kind = 'issue'
                       AND NEW.request_state IS NULL)
    EXECUTE FUNCTION stamp_inventory_request_state();
"""

WORKFLOW_RECOVERY_DOWNGRADE = """
DROP TRIGGER IF EXISTS tr_inventory_tx_request_state ON inventory_transactions;
DROP FUNCTION IF EXISTS stamp_inventory_request_state();
DROP TABLE IF EXISTS stuck_alerts;
DROP INDEX IF EXISTS ix_users_unreachable;
"""

# --- Functions ------------------------------------------------------------------------------
FUNCTIONS = """
CREATE FUNCTION cleanup_old_error_records(retention_days INTEGER DEFAULT 90)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE removed INTEGER;
BEGIN
    DELETE FROM error_records
     WHERE last_seen_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;

CREATE FUNCTION cleanup_old_transaction_logs(retention_days INTEGER DEFAULT 30)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE removed INTEGER;
BEGIN
    DELETE FROM transaction_log
     WHERE created_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;

-- Delivered, discarded and skipped notifications older than the retention (their retry-queue
-- entries go with them, ON DELETE CASCADE). Dead letters stay until an admin acts on them.
CREATE FUNCTION cleanup_old_notifications(retention_days INTEGER DEFAULT 14)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE removed INTEGER;
BEGIN
    DELETE FROM pending_notifications
     WHERE status IN ('sent', 'discarded', 'skipped')
       AND updated_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;

CREATE FUNCTION cleanup_old_health_snapshots(retention_days INTEGER DEFAULT 30)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE removed INTEGER;
BEGIN
    DELETE FROM system_health_snapshots
     WHERE created_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;

-- Live health figures in one JSON document (read by the admin menu and the 5-minute
-- snapshot). Stuck: active requests longer in their state than the threshold for
-- "workflow_type:state" in stuck_thresholds (seconds), else stuck_threshold_s (24 h).
-- Connection-pool use is a process figure: the caller merges it in.
CREATE FUNCTION get_system_health_summary(
    stuck_threshold_s DOUBLE PRECISION DEFAULT 86400,
    stuck_thresholds JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB LANGUAGE sql STABLE AS $$
WITH errors AS (
    SELECT category, severity, count(*) AS n FROM error_records
     WHERE last_seen_at > now() - interval '1 hour' GROUP BY category, severity
), jobs AS (
    SELECT job_name, count(*) AS n FROM job_runs
     WHERE started_at > now() - interval '1 hour' AND status = 'failed' GROUP BY job_name
), notification_counts AS (
    SELECT status, count(*) AS n FROM pending_notifications
     WHERE status IN ('pending', 'sending', 'retrying', 'dead') GROUP BY status
)
SELECT jsonb_build_object(
    'generated_at', now(),
    'active_requests',
        (SELECT count(*) FROM service_requests WHERE status = 'active'),
    -- over the default threshold, corrected per overridden state: index range scans only
    'stuck_requests',
        (SELECT count(*) FROM service_requests
          WHERE status = 'active'
            AND state_entered_at < now() - make_interval(secs => stuck_threshold_s))
        + COALESCE((SELECT sum(
              (SELECT count(*) FROM service_requests r
                WHERE r.status = 'active' AND r.workflow_type = split_part(t.key, ':', 1)
                  AND r.current_state = split_part(t.key, ':', 2)
                  AND r.state_entered_at < now() - make_interval(secs => t.value::float8))
            - (SELECT count(*) FROM service_requests r
                WHERE r.status = 'active' AND r.workflow_type = split_part(t.key, ':', 1)
                  AND r.current_state = split_part(t.key, ':', 2)
                  AND r.state_entered_at < now() - make_interval(secs => stuck_threshold_s)))
             FROM jsonb_each_text(stuck_thresholds) t), 0),
    'notifications', jsonb_build_object(
        'pending', COALESCE((SELECT sum(n) FROM notification_counts
                              WHERE status IN ('pending', 'sending')), 0),
        'retrying', COALESCE((SELECT n FROM notification_counts WHERE status = 'retrying'), 0),
        'dead', COALESCE((SELECT n FROM notification_counts WHERE status = 'dead'), 0)),
    'oldest_due_notification_s', COALESCE((
        SELECT extract(epoch FROM now() - min(next_attempt_at))::float8
          FROM pending_notifications
         WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()), 0),
    'errors_last_hour', COALESCE((
        SELECT jsonb_object_agg(category, n) FROM (
            SELECT category, sum(n) AS n FROM errors GROUP BY category) c), '{}'::jsonb),
    'errors_last_hour_by_severity', COALESCE((
        SELECT jsonb_object_agg(severity, n) FROM (
            SELECT severity, sum(n) AS n FROM errors GROUP BY severity) s), '{}'::jsonb),
    'negative_balances', (SELECT count(*) FROM materials WHERE balance < 0),
    'open_discrepancies',
        (SELECT count(*) FROM inventory_discrepancies WHERE status = 'open'),
    'job_failures_last_hour', COALESCE(
        (SELECT jsonb_object_agg(job_name, n) FROM jobs), '{}'::jsonb),
    'transactions_rolled_back_last_hour',
        (SELECT count(*) FROM transaction_log
          WHERE status = 'rolled_back' AND created_at > now() - interval '1 hour')
)
$$;
"""

DOWNGRADE = """
DROP TABLE IF EXISTS processed_updates;
DROP TABLE IF EXISTS job_runs;
DROP FUNCTION IF EXISTS get_system_health_summary(DOUBLE PRECISION, JSONB);
DROP FUNCTION IF EXISTS cleanup_old_health_snapshots(INTEGER);
DROP FUNCTION IF EXISTS cleanup_old_transaction_logs(INTEGER);
DROP FUNCTION IF EXISTS cleanup_old_error_records(INTEGER);
DROP FUNCTION IF EXISTS cleanup_old_notifications(INTEGER);
DROP TABLE IF EXISTS system_health_snapshots;
DROP TABLE IF EXISTS workflow_recovery_log;
DROP TABLE IF EXISTS inventory_reconciliation_log;
DROP TABLE IF EXISTS inventory_discrepancies;
DROP TABLE IF EXISTS notification_sender_state;
DROP TABLE IF EXISTS notification_retry_queue;
DROP TABLE IF EXISTS pending_notifications;
DROP FUNCTION IF EXISTS notify_pending_notifications();
DROP TABLE IF EXISTS transaction_log;
DROP TABLE IF EXISTS error_records;
DROP TABLE IF EXISTS inventory_transactions;
DROP TABLE IF EXISTS materials;
DROP TABLE IF EXISTS workflow_transitions;
DROP TABLE IF EXISTS service_requests;
DROP TABLE IF EXISTS users;
"""


def upgrade() -> None:
    op.execute(BASE_WORKFLOW)
    op.execute(RECOVERY)
    op.execute(DASHBOARD)
    op.execute(OPERATIONS)
    op.execute(WORKFLOW_RECOVERY)
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute(DASHBOARD_DOWNGRADE)
    op.execute(WORKFLOW_RECOVERY_DOWNGRADE)
    op.execute(DOWNGRADE)
