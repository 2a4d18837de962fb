"""SQL of compensating ledger movements: which issues a visit of a state consumed, and the
``return`` transactions (plus balance increments) that reverse them.

The ledger (``inventory_transactions``) is the source of truth: signed ``quantity``, issue
< 0, return > 0. Every issue for a request is stamped by a trigger with the request's state
and ``state_entered_at`` at the moment of the issue (migration 0001,
``tr_inventory_tx_request_state``), so "the issues of this visit of this state" is an exact
match, not a guess from timestamps. What is still outstanding of an issue is its quantity
minus everything that already reverses it (``reverses_id``).

A reversal's idempotency key is ``compensation:issue:<issue id>``: an issue is reversed at
most once, however often a reset is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from database.pool import AnyConnection

# Issues made during given visits of states: (request, state, state_entered_at) triples as
# parallel arrays, matched against the stamp every issue carries; with what is still
# outstanding of each (> 0 only).
VISIT_ISSUES_SQL = """
SELECT i.request_id, i.id AS issue_id, i.material_id, m.sku, m.name, m.unit,
       -i.quantity - COALESCE(back.quantity, 0) AS outstanding
  FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS v (request_id, state, entered_at)
  JOIN inventory_transactions i
    ON i.request_id = v.request_id AND i.kind = 'issue'
   AND i.request_state = v.state AND i.request_state_entered_at = v.entered_at
  JOIN materials m ON m.id = i.material_id
  LEFT JOIN LATERAL (
       SELECT sum(b.quantity) AS quantity FROM inventory_transactions b
        WHERE b.reverses_id = i.id) back ON TRUE
 WHERE -i.quantity - COALESCE(back.quantity, 0) > 0
 ORDER BY i.material_id, i.id
"""

# Every issue of a request with what is still outstanding of each (> 0 only).
REQUEST_ISSUES_SQL = """
SELECT i.request_id, i.id AS issue_id, i.material_id, m.sku, m.name, m.unit,
       -i.quantity - COALESCE(back.quantity, 0) AS outstanding
  FROM inventory_transactions i
  JOIN materials m ON m.id = i.material_id
  LEFT JOIN LATERAL (
       SELECT sum(b.quantity) AS quantity FROM inventory_transactions b
        WHERE b.reverses_id = i.id) back ON TRUE
 WHERE i.request_id = ANY($1::bigint[]) AND i.kind = 'issue'
   AND -i.quantity - COALESCE(back.quantity, 0) > 0
 ORDER BY i.material_id, i.id
"""

INSERT_RETURN_SQL = """
INSERT INTO inventory_transactions
    (material_id, kind, quantity, request_id, actor_id, idempotency_key, reverses_id, note)
VALUES ($1, 'return', $2, $3, $4, $5, $6, $7)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""

INCREMENT_SQL = """
UPDATE materials SET balance = balance + $2, updated_at = now() WHERE id = $1
RETURNING balance
"""


@dataclass(frozen=True, slots=True)
class Outstanding:
    """An issue not (fully) reversed yet: ``quantity`` units (> 0) of a material, issued
    for ``request_id``."""

    request_id: int
    issue_id: int
    material_id: int
    sku: str
    name: str
    unit: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Reversal:
    """A return written by ``reverse``: ledger row ``ledger_id`` gave back ``quantity`` units
    of ``material_id`` for issue ``issue_id``; the balance is now ``balance_after``."""

    ledger_id: int
    issue_id: int
    material_id: int
    quantity: int
    balance_after: int


def _outstanding(rows: list[asyncpg.Record]) -> list[Outstanding]:
    return [
        Outstanding(
            request_id=row["request_id"],
            issue_id=row["issue_id"],
            material_id=row["material_id"],
            sku=row["sku"],
            name=row["name"],
            unit=row["unit"],
            quantity=int(row["outstanding"]),
        )
        for row in rows
    ]


def reversal_key(issue_id: int) -> str:
    """The idempotency key of the return that reverses issue ``issue_id``."""
    return f"compensation:issue:{issue_id}"


async def visit_issues(
    conn: AnyConnection | asyncpg.Pool, visits: list[tuple[int, str, datetime]]
) -> list[Outstanding]:
    """The issues made for each (request, state, state_entered_at) visit, with what is still
    outstanding of each. Called with the visits of the step a reset undoes, under the
    request's row lock, this is exactly what the reset gives back."""
    if not visits:
        return []
    rows = await conn.fetch(
        VISIT_ISSUES_SQL,
        [v[0] for v in visits],
        [v[1] for v in visits],
        [v[2] for v in visits],
    )
    return _outstanding(list({row["issue_id"]: row for row in rows}.values()))


async def request_issues(
    conn: AnyConnection | asyncpg.Pool, request_ids: list[int]
) -> list[Outstanding]:
    """Every issue of these requests still (partly) outstanding."""
    return _outstanding(await conn.fetch(REQUEST_ISSUES_SQL, request_ids))


async def reverse(
    conn: AnyConnection,
    issues: list[Outstanding],
    *,
    actor_id: int | None,
    note: str,
) -> list[Reversal]:
    """Write one ``return`` per outstanding issue and give the units back to the balance.

    Call inside the transaction that holds the request ``FOR UPDATE`` (no new issue for it
    can appear meanwhile). Materials are updated in id order, the order every stock movement
    uses, so two reversals cannot deadlock. An issue whose reversal key exists already is
    skipped (nothing is given back twice). Returns the reversals written.
    """
    written: list[Reversal] = []
    for issue in sorted(issues, key=lambda i: (i.material_id, i.issue_id)):
        ledger_id = await conn.fetchval(
            INSERT_RETURN_SQL,
            issue.material_id,
            issue.quantity,
            issue.request_id,
            actor_id,
            reversal_key(issue.issue_id),
            issue.issue_id,
            note,
        )
        if ledger_id is None:
            continue
        balance = await conn.fetchval(INCREMENT_SQL, issue.material_id, issue.quantity)
        written.append(
            Reversal(
                ledger_id=ledger_id,
                issue_id=issue.issue_id,
                material_id=issue.material_id,
                quantity=issue.quantity,
                balance_after=balance,
            )
        )
    return written
