"""The health summary without its own definition of a stuck request; no callback data in
the outbox.

``get_system_health_summary()`` counted stuck requests by their deadline only, while the
stuck list, the metric and the digests also count requests held by an unreachable assignee
(``database/stuck.py``). The function now leaves the figure out and takes no parameters;
the health monitor adds ``stuck_requests`` from the one definition.

Admin alerts in the outbox carried their mute buttons as ``params["buttons"]`` (texts and
the Telegram layer's callback data ``am:<kind>:<seconds>``). They now carry the offer only,
``params["mute"] = {"kinds": [...], "durations": [...]}``, and the buttons are made when the
message is sent; existing rows are converted (an alert's one row of durations, a digest's
row per kind), and back on downgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
DROP FUNCTION get_system_health_summary(DOUBLE PRECISION, JSONB);

-- Live health figures in one JSON document (read by the admin menu and the 5-minute
-- snapshot). Stuck requests are not counted here: their one definition is the SQL of
-- database/stuck.py, which the caller runs and merges in, as it does the pool's use.
CREATE FUNCTION get_system_health_summary()
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

# An alert's buttons are one row of durations for its kind; a digest's, one row per kind.
BUTTONS_TO_MUTE = """
UPDATE pending_notifications p
   SET params = (p.params - 'buttons') || jsonb_build_object('mute', CASE
       WHEN jsonb_array_length(p.params->'buttons'->0) > 1 THEN jsonb_build_object(
           'kinds', jsonb_build_array(
               split_part(p.params->'buttons'->0->0->>'callback_data', ':', 2)),
           'durations', (SELECT jsonb_agg(split_part(b->>'callback_data', ':', 3)::int)
                           FROM jsonb_array_elements(p.params->'buttons'->0) b))
       ELSE jsonb_build_object(
           'kinds', (SELECT jsonb_agg(split_part(r->0->>'callback_data', ':', 2))
                       FROM jsonb_array_elements(p.params->'buttons') r),
           'durations', jsonb_build_array(
               split_part(p.params->'buttons'->0->0->>'callback_data', ':', 3)::int))
       END)
 WHERE jsonb_typeof(p.params->'buttons') = 'array'
   AND jsonb_array_length(p.params->'buttons') > 0;
"""

MUTE_TO_BUTTONS = """
UPDATE pending_notifications p
   SET params = (p.params - 'mute') || jsonb_build_object('buttons', CASE
       WHEN jsonb_array_length(p.params->'mute'->'durations') > 1 THEN jsonb_build_array(
           (SELECT jsonb_agg(jsonb_build_object(
                       'text', CASE d::int WHEN 3600 THEN 'Mute for 1 hour'
                                           ELSE 'Mute for 24 hours' END,
                       'callback_data', 'am:' || (p.params->'mute'->'kinds'->>0) || ':' || d))
              FROM jsonb_array_elements_text(p.params->'mute'->'durations') d))
       ELSE (SELECT jsonb_agg(jsonb_build_array(jsonb_build_object(
                       'text', CASE k WHEN 'error' THEN 'Mute error alerts for 1 hour'
                                      WHEN 'health' THEN 'Mute health alerts for 1 hour'
                                      WHEN 'stuck' THEN 'Mute stuck-workflow alerts for 1 hour'
                                      ELSE 'Mute system alerts for 1 hour' END,
                       'callback_data',
                       'am:' || k || ':' || (p.params->'mute'->'durations'->>0))))
               FROM jsonb_array_elements_text(p.params->'mute'->'kinds') k)
       END)
 WHERE jsonb_typeof(p.params->'mute') = 'object';
"""

# The function of 0001, unchanged.
DOWNGRADE = """
DROP FUNCTION get_system_health_summary();

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


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(BUTTONS_TO_MUTE)


def downgrade() -> None:
    op.execute(MUTE_TO_BUTTONS)
    op.execute(DOWNGRADE)
