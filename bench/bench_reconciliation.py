"""Benchmark: inventory reconciliation detection, set-based vs a naive per-material loop.

Data: 10,000 materials, 1,000,000 ledger rows (plus the rows of the seeded discrepancies),
50,000 requests with their transitions; discrepancies seeded on 1% of the materials (100):
40 drift, 15 negative balances, 10 negative ledgers, 20 orphans (cancelled, missing and
never-in-a-material-state requests), 15 duplicate external references.

Measured side by side in one run, on a dedicated database created and dropped here:
- the manager's full detection (set-based: orphans and duplicates in one query each, the
  material-level check in chunks of 2,000 materials for progress; and in one chunk);
- the naive loop: the same checks run per material (3 queries per material, 10,000 times,
  with the one-material queries the fix path uses);
- the fix runs (the hourly job's auto-fix, then an admin's fix-all) and the second run.
Both detections must find the same 100 discrepancies. Prints the figures and writes them,
with EXPLAIN (ANALYZE, BUFFERS) of the detection queries, to
``bench/results/reconciliation.md``.

Run: ``.venv/bin/python bench/bench_reconciliation.py`` (``BENCH_DATABASE_URL``: a server to
create the database on; default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from database import inventory as inv
from database.migrate import upgrade_to_head
from database.pool import create_pool
from recovery.actors import Actor
from recovery.inventory import (
    ALL_KINDS,
    DiscrepancyKind,
    InventoryReconciliationManager,
    ReconciliationPolicy,
    classify_material,
)

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"bench_reconciliation_{os.getpid()}"
RESULTS = Path(__file__).parent / "results" / "reconciliation.md"

MATERIALS = 10_000
LEDGER_ROWS = 1_000_000
REQUESTS = 50_000
COMPLETED = 45_000  # 1..45,000 completed after in_work
IN_WORK = 49_000  # 45,001..49,000 active in in_work
CANCELLED = 49_500  # 49,001..49,500 cancelled in review (never used materials)
# 49,501..50,000 active in "new" (never reached a material state)
GRACE_S = 24 * 3600.0
DETECT_REPEATS = 5
NAIVE_REPEATS = 3
EXPECTED = {
    "drift": 40,
    "negative_balance": 15,
    "negative_ledger": 10,
    "orphaned_transaction": 20,
    "duplicate_reference": 15,
}


def with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


SEED_SQL = [
    (
        "users",
        "INSERT INTO users (telegram_id, full_name) VALUES (1, 'bench')",
    ),
    (
        "requests",
        f"""
        INSERT INTO service_requests (workflow_type, client_id, current_state, owner_role, status)
        SELECT 'repair', 1,
               CASE WHEN g <= {COMPLETED} THEN 'completed' WHEN g <= {IN_WORK} THEN 'in_work'
                    WHEN g <= {CANCELLED} THEN 'review' ELSE 'new' END,
               NULL,
               CASE WHEN g <= {COMPLETED} THEN 'completed' WHEN g <= {IN_WORK} THEN 'active'
                    WHEN g <= {CANCELLED} THEN 'cancelled' ELSE 'active' END
          FROM generate_series(1, {REQUESTS}) g
        """,
    ),
    (
        "transitions",
        f"""
        INSERT INTO workflow_transitions (request_id, from_state, to_state, kind)
        SELECT g, NULL, 'new', 'create' FROM generate_series(1, {REQUESTS}) g
        UNION ALL
        SELECT g, 'new', 'in_work', 'normal' FROM generate_series(1, {IN_WORK}) g
        UNION ALL
        SELECT g, 'in_work', 'completed', 'complete' FROM generate_series(1, {COMPLETED}) g
        UNION ALL
        SELECT g, 'new', 'review', 'normal' FROM generate_series({IN_WORK} + 1, {CANCELLED}) g
        """,
    ),
    (
        "materials",
        f"""
        INSERT INTO materials (sku, name, balance)
        SELECT 'SKU-' || g, 'material ' || g, 0 FROM generate_series(1, {MATERIALS}) g
        """,
    ),
    (
        # per material 100 rows: a large receipt, 9 receipts, 10 returns, 80 issues for
        # requests that used materials, spread over the last 100 hours
        "ledger",
        f"""
        INSERT INTO inventory_transactions
            (material_id, kind, quantity, request_id, idempotency_key, created_at)
        SELECT m, kind, quantity, request_id, 'seed:' || g,
               now() - make_interval(hours => 100 - k)
          FROM (
                SELECT g, ((g - 1) % {MATERIALS}) + 1 AS m, (g - 1) / {MATERIALS} AS k
                  FROM generate_series(1, {LEDGER_ROWS}) g
               ) s,
               LATERAL (
                SELECT CASE WHEN k % 10 = 0 THEN 'receipt' WHEN k % 10 = 5 THEN 'return'
                            ELSE 'issue' END AS kind,
                       CASE WHEN k = 0 THEN 5000 WHEN k % 10 = 0 THEN 200 WHEN k % 10 = 5 THEN 1
                            ELSE -(1 + g % 5) END AS quantity,
                       CASE WHEN k % 10 = 0 THEN NULL ELSE 1 + g % {IN_WORK} END AS request_id
               ) v
        """,
    ),
    (
        "balances",
        """
        UPDATE materials m SET balance = l.s
          FROM (SELECT material_id, sum(quantity) AS s FROM inventory_transactions
                 GROUP BY material_id) l
         WHERE l.material_id = m.id
        """,
    ),
]


def discrepancy_sql() -> list[str]:
    """Seed one discrepancy on each of 100 materials (ids 1, 101, ..., 9901)."""
    sql: list[str] = []
    for i in range(100):
        m = 100 * i + 1
        if i < 40:  # drift
            sql.append(f"UPDATE materials SET balance = balance + {i + 1} WHERE id = {m}")
        elif i < 55:  # negative balance over a positive ledger
            sql.append(f"UPDATE materials SET balance = -{i} WHERE id = {m}")
        elif i < 65:  # negative ledger (the balance follows it: consistent but negative)
            sql.append(
                f"""
                WITH s AS (SELECT sum(quantity) AS s FROM inventory_transactions
                            WHERE material_id = {m}),
                     ins AS (INSERT INTO inventory_transactions
                                 (material_id, kind, quantity, request_id, idempotency_key)
                             SELECT {m}, 'issue', -(s.s + 5), 1, 'neg:{m}' FROM s
                             RETURNING quantity)
                UPDATE materials SET balance = balance + (SELECT quantity FROM ins)
                 WHERE id = {m}
                """
            )
        elif i < 85:  # orphans: cancelled, missing, never in a material state
            request = IN_WORK + i if i < 75 else (10_000_000 + i if i < 80 else CANCELLED + i)
            sql.append(
                f"""
                INSERT INTO inventory_transactions
                    (material_id, kind, quantity, request_id, idempotency_key, created_at)
                VALUES ({m}, 'issue', -4, {request}, 'orphan:{m}', now() - interval '3 days')
                """
            )
            sql.append(f"UPDATE materials SET balance = balance - 4 WHERE id = {m}")
        else:  # an imported delivery note line booked twice
            for copy in (1, 2):
                sql.append(
                    f"""
                    INSERT INTO inventory_transactions
                        (material_id, kind, quantity, idempotency_key, external_reference)
                    VALUES ({m}, 'receipt', 50, 'import:{m}:{copy}', 'DN-{i}/1')
                    """
                )
            sql.append(f"UPDATE materials SET balance = balance + 100 WHERE id = {m}")
    return sql


async def seed(conn: asyncpg.Connection) -> dict[str, float]:
    timings: dict[str, float] = {}
    for name, sql in SEED_SQL:
        started = time.perf_counter()
        await conn.execute(sql)
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    for sql in discrepancy_sql():
        await conn.execute(sql)
    timings["discrepancies"] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


async def naive_detect(conn: asyncpg.Connection, policy: ReconciliationPolicy) -> set[tuple]:
    """The per-material loop: the same three checks, one material at a time."""
    found: set[tuple] = set()
    states = sorted(policy.material_states)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM materials ORDER BY id")]
    for m in ids:
        for row in await inv.material_level(conn, m, m):
            d = classify_material(m, row["balance"], row["ledger_sum"])
            if d is not None:
                found.add((str(d.kind), d.fingerprint, d.amount))
        for row in await inv.orphans(
            conn, material_states=states, grace_s=policy.orphan_grace_s, material_id=m
        ):
            found.add(
                (
                    str(DiscrepancyKind.ORPHANED_TRANSACTION),
                    f"orphan:{m}:{row['request_id']}",
                    -int(row["net"]),
                )
            )
        for row in await inv.duplicates(conn, m, m):
            found.add(
                (
                    str(DiscrepancyKind.DUPLICATE_REFERENCE),
                    f"duplicate:{row['transaction_id']}",
                    -int(row["quantity"]),
                )
            )
    return found


async def timed(repeats: int, func: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = await func()
        times.append(time.perf_counter() - started)
    return times, result


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return "\n".join(r[0] for r in rows)


async def main() -> None:
    admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DB_NAME}"')
    url = with_database(SERVER, DB_NAME)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        await bench(url)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


async def bench(url: str) -> None:
    pool = await create_pool(url, min_size=1, max_size=4, command_timeout_s=600)
    try:
        async with pool.acquire() as conn:
            seed_times = await seed(conn)
            ledger_rows = await conn.fetchval("SELECT count(*) FROM inventory_transactions")
            server = await conn.fetchval("SHOW server_version")
        print(f"seeded {ledger_rows} ledger rows in {sum(seed_times.values()):.1f} s")
        policy = ReconciliationPolicy(orphan_grace_s=GRACE_S)
        chunked = InventoryReconciliationManager(pool, policy, chunk_size=2000)
        one_chunk = InventoryReconciliationManager(pool, policy, chunk_size=MATERIALS)

        # warm the cache once, then measure side by side
        await chunked.detect()
        set_times, (found, checked) = await timed(DETECT_REPEATS, chunked.detect)
        one_times, (found_one, _) = await timed(DETECT_REPEATS, one_chunk.detect)
        set_keys = {(str(d.kind), d.fingerprint, d.amount) for d in found}
        assert set_keys == {(str(d.kind), d.fingerprint, d.amount) for d in found_one}
        counts: dict[str, int] = {}
        for d in found:
            counts[str(d.kind)] = counts.get(str(d.kind), 0) + 1
        assert checked == MATERIALS and counts == EXPECTED, (checked, counts)
        print(f"set-based detection: median {statistics.median(set_times):.3f} s {set_times}")

        async with pool.acquire() as conn:
            naive_times, naive_keys = await timed(NAIVE_REPEATS, lambda: naive_detect(conn, policy))
        assert naive_keys == set_keys, "the naive loop must find the same discrepancies"
        print(f"naive loop: median {statistics.median(naive_times):.3f} s {naive_times}")

        async with pool.acquire() as conn:
            states = sorted(policy.material_states)
            plans = {
                "material level, one chunk of 2,000 materials (`MATERIAL_LEVEL_SQL`)": (
                    await explain(conn, inv.MATERIAL_LEVEL_SQL, 2001, 4000)
                ),
                "orphans, whole inventory (`ORPHANS_SQL`)": (
                    await explain(conn, inv.ORPHANS_SQL, states, GRACE_S)
                ),
                "duplicates, whole inventory (`DUPLICATES_SQL`)": (
                    await explain(conn, inv.DUPLICATES_SQL, 0, MATERIALS)
                ),
                "orphans, one material: the fix path under the lock (`ORPHANS_ONE_SQL`)": (
                    await explain(conn, inv.ORPHANS_ONE_SQL, states, GRACE_S, 6501)
                ),
            }

        started = time.perf_counter()
        auto = await chunked.auto_fix()
        auto_s = time.perf_counter() - started
        started = time.perf_counter()
        admin_run = await chunked.run(dry_run=False, actor=Actor(None, "admin", 1), kinds=ALL_KINDS)
        admin_s = time.perf_counter() - started
        started = time.perf_counter()
        second = await chunked.run(dry_run=True, kinds=ALL_KINDS)
        second_s = time.perf_counter() - started
        assert len(auto.fixed) == 75 and not auto.failed, auto.summary()
        assert len(admin_run.fixed) == 25 and not admin_run.failed, admin_run.summary()
        assert second.discrepancies == [], second.summary()
        async with pool.acquire() as conn:
            mismatched = await conn.fetchval(
                "SELECT count(*) FROM materials m WHERE m.balance <> (SELECT COALESCE(sum("
                "quantity), 0) FROM inventory_transactions t WHERE t.material_id = m.id) "
                "OR m.balance < 0"
            )
        assert mismatched == 0
    finally:
        await pool.close()

    set_median = statistics.median(set_times)
    naive_median = statistics.median(naive_times)
    ratio = naive_median / set_median
    print(f"ratio naive / set-based: {ratio:.1f}x")
    write_results(
        server=server,
        ledger_rows=ledger_rows,
        seed_times=seed_times,
        set_times=set_times,
        one_times=one_times,
        naive_times=naive_times,
        ratio=ratio,
        fix={"auto": (auto_s, auto), "admin": (admin_s, admin_run), "second": (second_s, second)},
        plans=plans,
    )
    print(f"results written to {RESULTS}")


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def write_results(
    *,
    server: str,
    ledger_rows: int,
    seed_times: dict[str, float],
    set_times: list[float],
    one_times: list[float],
    naive_times: list[float],
    ratio: float,
    fix: dict[str, tuple[float, Any]],
    plans: dict[str, str],
) -> None:
    auto_s, auto = fix["auto"]
    admin_s, admin_run = fix["admin"]
    second_s, _ = fix["second"]
    lines = [
        "# Inventory reconciliation benchmark",
        "",
        f"Written by `bench/bench_reconciliation.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"(PostgreSQL {server}, {platform.machine()}, {os.cpu_count()} cores shared with other "
        "work, Python " + platform.python_version() + ").",
        "",
        f"Data: {MATERIALS:,} materials, {ledger_rows:,} ledger rows, {REQUESTS:,} requests; "
        "discrepancies on 1% of the materials (100): "
        + ", ".join(f"{v} {k}" for k, v in EXPECTED.items())
        + ". Seeding took "
        + ", ".join(f"{k} {v:.1f} s" for k, v in seed_times.items())
        + ".",
        "",
        "## Full detection run (warm cache)",
        "",
        "| method | runs (s) | median (s) |",
        "|---|---|---|",
        f"| set-based, chunks of 2,000 materials (`detect()`) | {fmt(set_times)} | "
        f"**{statistics.median(set_times):.3f}** |",
        f"| set-based, one chunk | {fmt(one_times)} | {statistics.median(one_times):.3f} |",
        f"| naive loop, 3 queries per material | {fmt(naive_times)} | "
        f"**{statistics.median(naive_times):.3f}** |",
        "",
        f"**Ratio naive / set-based (medians): {ratio:.1f}x.** Both found the same "
        "100 discrepancies (asserted).",
        "",
        "## Fix runs on the same data",
        "",
        f"- hourly auto-fix (drift, negative balance, orphans): {len(auto.fixed)} fixes in "
        f"{auto_s:.3f} s (detection {auto.detect_s:.3f} s, fixes {auto.fix_s:.3f} s; "
        f"{len(auto.waiting)} left for an admin)",
        f"- admin fix-all of the rest (negative ledgers, duplicates): {len(admin_run.fixed)} "
        f"fixes in {admin_s:.3f} s",
        f"- second run right after: 0 discrepancies, {second_s:.3f} s; afterwards every balance "
        "equals its ledger sum and none is negative (asserted).",
        "",
        "## EXPLAIN (ANALYZE, BUFFERS) of the detection queries",
        "",
    ]
    for title, plan in plans.items():
        lines += [f"### {title}", "", "```", plan, "```", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
