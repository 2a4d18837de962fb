"""``InventoryReconciliationManager``: find and fix stock discrepancies against the ledger.

The ledger (``inventory_transactions``) is the source of truth; ``materials.balance`` is a
running total that must equal the material's ledger sum, and nothing may stay negative.
Kinds of discrepancy (``DiscrepancyKind``), the fix each one gets, and ``amount`` (the signed
correction the fix writes):

- ``drift``: balance <> ledger sum (both >= 0). The balance is wrong, not the ledger: the fix
  sets the balance to the ledger sum and writes no ledger row. amount = ledger - balance.
- ``negative_balance``: balance < 0 while the ledger sum is >= 0: fixed like drift.
- ``negative_ledger``: the ledger sum itself is < 0 (more issued than ever received). The fix
  writes an ``adjustment`` ledger row of ``-ledger`` and sets the balance to 0. A stock
  write-up, so by default it waits for an admin. amount = -ledger.
- ``orphaned_transaction``: the net of the ledger rows booked against a request that does
  not exist, is cancelled, or never reached a state that uses materials
  (``MATERIAL_STATES``) is an outflow, and the newest row is older than the grace period.
  The fix writes one reversing ``adjustment`` (same request_id, ``reverses_id`` = the issue
  when there is one) and moves the balance with it. amount = -net.
- ``duplicate_reference``: a second unreversed ledger row with the same
  ``(material_id, external_reference)`` (imported rows; ``idempotency_key`` stays unique).
  The fix reverses the later row and moves the balance with it. amount = -quantity.

Detection is set-based (a few queries per chunk of materials, in one REPEATABLE READ
snapshot). A fix is one transaction per material that locks the material row, re-detects
under the lock, applies row-level fixes first (they change the ledger sum), then
re-evaluates the material-level kind, and writes per fix a ``inventory_reconciliation_log``
row (before, after, action, actor). Open discrepancies live in ``inventory_discrepancies``;
an admin may accept one with a reason, which covers that fingerprint and amount only.
Runs, fixes and acceptances are serialised across instances by an advisory lock.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import asyncpg

from database import inventory as inv
from database.pool import AnyConnection
from recovery.errors import ErrorHandler
from recovery.exceptions import ConcurrentModificationError, InputValidationError, NotFoundError
from recovery.workflow_definitions import MATERIAL_STATES

log = logging.getLogger(__name__)

SCHEDULER_ACTOR = "scheduler"

Progress = Callable[[int, int], Awaitable[None] | None]
"""Progress callback ``(done, total)``: materials checked of all materials during detection,
then materials fixed of the materials to fix during the fix phase."""


def admin_actor(telegram_id: int) -> str:
    """The ``actor`` recorded for an admin's action: ``admin:<telegram id>``."""
    return f"admin:{telegram_id}"


class DiscrepancyKind(StrEnum):
    """What is wrong; see the module docstring for the fix of each kind."""

    NEGATIVE_BALANCE = "negative_balance"
    NEGATIVE_LEDGER = "negative_ledger"
    DRIFT = "drift"
    ORPHANED_TRANSACTION = "orphaned_transaction"
    DUPLICATE_REFERENCE = "duplicate_reference"


ALL_KINDS: frozenset[DiscrepancyKind] = frozenset(DiscrepancyKind)
MATERIAL_LEVEL_KINDS: frozenset[DiscrepancyKind] = frozenset(
    {DiscrepancyKind.DRIFT, DiscrepancyKind.NEGATIVE_BALANCE, DiscrepancyKind.NEGATIVE_LEDGER}
)
# Issue #6 default: drift and orphans fixed by the hourly job (a negative balance over a
# non-negative ledger is drift too); a negative ledger and duplicates wait for an admin.
DEFAULT_AUTO_FIX: frozenset[DiscrepancyKind] = frozenset(
    {
        DiscrepancyKind.DRIFT,
        DiscrepancyKind.NEGATIVE_BALANCE,
        DiscrepancyKind.ORPHANED_TRANSACTION,
    }
)


@dataclass(frozen=True, slots=True)
class ReconciliationPolicy:
    """Which kinds the hourly job fixes by itself, and the orphan grace period.

    Args:
        auto_fix: kinds the scheduler fixes; the others stay open for an admin.
        orphan_grace_s: seconds a request's newest ledger row must be old before its
            outflow may count as orphaned (``INVENTORY_ORPHAN_GRACE_S``, default 24 h).
        material_states: workflow states in which a request may use materials.

    Raises:
        ValueError: negative grace period or unknown kind.
    """

    auto_fix: frozenset[DiscrepancyKind] = DEFAULT_AUTO_FIX
    orphan_grace_s: float = 24 * 3600.0
    material_states: frozenset[str] = MATERIAL_STATES

    def __post_init__(self) -> None:
        if self.orphan_grace_s < 0:
            raise ValueError("orphan_grace_s must be >= 0")
        object.__setattr__(self, "auto_fix", frozenset(DiscrepancyKind(k) for k in self.auto_fix))

    @classmethod
    def of(cls, auto_fix: Iterable[str], orphan_grace_s: float) -> ReconciliationPolicy:
        """Build from settings values (kind names as strings)."""
        return cls(
            auto_fix=frozenset(DiscrepancyKind(k) for k in auto_fix),
            orphan_grace_s=orphan_grace_s,
        )


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One discrepancy: kind, the material's balance and ledger sum when it was seen, and
    ``amount``, the signed correction its fix writes. ``id`` is the persisted row
    (``inventory_discrepancies``) when there is one."""

    kind: DiscrepancyKind
    fingerprint: str
    material_id: int
    balance: int
    ledger_sum: int
    amount: int
    sku: str | None = None
    request_id: int | None = None
    transaction_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    status: str = "open"
    reason: str | None = None
    closed_by: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The columns of ``inventory_discrepancies``."""
        return {
            "fingerprint": self.fingerprint,
            "kind": str(self.kind),
            "material_id": self.material_id,
            "request_id": self.request_id,
            "transaction_id": self.transaction_id,
            "amount": self.amount,
            "balance": self.balance,
            "ledger_sum": self.ledger_sum,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class FixOutcome:
    """What a fix did to one discrepancy.

    ``action``: ``adjusted`` (balance and/or an adjustment row), ``reversed`` (a reversing
    ledger row), ``skipped`` (no longer present under the lock), ``failed`` (``error`` says
    why). ``before``/``after``: ``{"balance": .., "ledger_sum": ..}``.
    """

    kind: DiscrepancyKind
    fingerprint: str
    material_id: int
    action: str
    amount: int = 0
    discrepancy_id: int | None = None
    transaction_id: int | None = None
    log_id: int | None = None
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class RunReport:
    """The result of one reconciliation run.

    ``discrepancies``: everything detected (accepted ones excluded; ``accepted`` counts
    them). In a dry run nothing was written; ``planned`` are the ones the run's kinds would
    fix. ``fixed``/``failed``: fix outcomes. ``resolved``: open rows closed because they
    were gone. Durations in seconds.
    """

    run_id: uuid.UUID
    actor: str
    dry_run: bool
    kinds: frozenset[DiscrepancyKind]
    materials_checked: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    accepted: int = 0
    fixed: list[FixOutcome] = field(default_factory=list)
    failed: list[FixOutcome] = field(default_factory=list)
    resolved: int = 0
    detect_s: float = 0.0
    fix_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Detected discrepancies by kind."""
        counts: dict[str, int] = {}
        for d in self.discrepancies:
            counts[str(d.kind)] = counts.get(str(d.kind), 0) + 1
        return counts

    @property
    def planned(self) -> list[Discrepancy]:
        """Detected discrepancies whose kind this run fixes (or would fix, in a dry run)."""
        return [d for d in self.discrepancies if d.kind in self.kinds]

    @property
    def waiting(self) -> list[Discrepancy]:
        """Detected discrepancies left open for an admin (kind not fixed by this run)."""
        return [d for d in self.discrepancies if d.kind not in self.kinds]

    def summary(self) -> dict[str, Any]:
        """Figures for logs and the scheduler's job result."""
        return {
            "run_id": str(self.run_id),
            "dry_run": self.dry_run,
            "materials": self.materials_checked,
            "detected": self.counts,
            "fixed": len(self.fixed),
            "failed": len(self.failed),
            "waiting_for_admin": len(self.waiting),
            "accepted": self.accepted,
            "resolved": self.resolved,
            "detect_s": round(self.detect_s, 3),
            "fix_s": round(self.fix_s, 3),
        }


@dataclass(frozen=True, slots=True)
class DiscrepancyPage:
    """A page of open discrepancies and the number of all matches."""

    items: list[Discrepancy]
    total: int


def classify_material(
    material_id: int, balance: int, ledger_sum: int, sku: str | None = None
) -> Discrepancy | None:
    """The material-level discrepancy of a (balance, ledger sum) pair, or None when they
    agree and are not negative. One per material: a negative ledger wins over drift."""
    if ledger_sum < 0:
        kind, amount = DiscrepancyKind.NEGATIVE_LEDGER, -ledger_sum
    elif balance < 0:
        kind, amount = DiscrepancyKind.NEGATIVE_BALANCE, ledger_sum - balance
    elif balance != ledger_sum:
        kind, amount = DiscrepancyKind.DRIFT, ledger_sum - balance
    else:
        return None
    return Discrepancy(
        kind=kind,
        fingerprint=f"material:{material_id}",
        material_id=material_id,
        balance=balance,
        ledger_sum=ledger_sum,
        amount=amount,
        sku=sku,
    )


def _orphan(row: asyncpg.Record) -> Discrepancy:
    single_issue = row["issue_count"] == 1 and row["last_issue_id"] is not None
    return Discrepancy(
        kind=DiscrepancyKind.ORPHANED_TRANSACTION,
        fingerprint=f"orphan:{row['material_id']}:{row['request_id']}",
        material_id=int(row["material_id"]),
        balance=0,
        ledger_sum=0,
        amount=-int(row["net"]),
        request_id=int(row["request_id"]),
        transaction_id=row["last_issue_id"] or row["last_id"],
        details={
            "reason": row["reason"],
            "net": int(row["net"]),
            "last_id": int(row["last_id"]),
            "issue_count": int(row["issue_count"]),
            "reverses_id": row["last_issue_id"] if single_issue else None,
        },
    )


def _duplicate(row: asyncpg.Record) -> Discrepancy:
    return Discrepancy(
        kind=DiscrepancyKind.DUPLICATE_REFERENCE,
        fingerprint=f"duplicate:{row['transaction_id']}",
        material_id=int(row["material_id"]),
        balance=0,
        ledger_sum=0,
        amount=-int(row["quantity"]),
        transaction_id=int(row["transaction_id"]),
        details={
            "external_reference": row["external_reference"],
            "first_id": int(row["first_id"]),
            "transaction_kind": row["kind"],
            "quantity": int(row["quantity"]),
        },
    )


def _from_row(row: asyncpg.Record) -> Discrepancy:
    return Discrepancy(
        kind=DiscrepancyKind(row["kind"]),
        fingerprint=row["fingerprint"],
        material_id=int(row["material_id"]),
        balance=int(row["balance"]),
        ledger_sum=int(row["ledger_sum"]),
        amount=int(row["amount"]),
        sku=row["sku"],
        request_id=row["request_id"],
        transaction_id=row["transaction_id"],
        details=dict(row["details"]) if isinstance(row["details"], dict) else {},
        id=int(row["id"]),
        status=row["status"],
        reason=row["reason"],
        closed_by=row["closed_by"],
    )


async def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is None:
        return
    try:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # a failed progress message must not stop reconciliation
        log.warning("progress callback failed: %s", type(exc).__name__)


class InventoryReconciliationManager:
    """Detects and fixes inventory discrepancies; the admin menu's inventory operations.

    Args:
        pool: asyncpg pool.
        policy: auto-fix kinds and orphan grace period.
        chunk_size: materials per detection query (progress is reported per chunk).
        error_handler: records a material whose fix failed (optional).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: ReconciliationPolicy | None = None,
        *,
        chunk_size: int = 2000,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.pool = pool
        self.policy = policy or ReconciliationPolicy()
        self.chunk_size = chunk_size
        self.error_handler = error_handler

    # --- detection ----------------------------------------------------------------------

    async def detect(self, progress: Progress | None = None) -> tuple[list[Discrepancy], int]:
        """Every current discrepancy (accepted ones included), in one consistent snapshot.
        Writes nothing. Returns (discrepancies, number of materials checked).

        Orphans and duplicates are one query each over the whole inventory; the
        material-level check runs per chunk of ``chunk_size`` materials, and ``progress``
        gets (materials checked, materials) after each chunk.
        """
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            total, _, last_id = await inv.material_range(conn)
            await _report(progress, 0, total)
            row_level = await self._row_level(conn, None, last_id)
            found: list[Discrepancy] = []
            done, after = 0, 0
            while (chunk := await inv.next_chunk(conn, after, self.chunk_size)) is not None:
                last, size = chunk
                found += [
                    d
                    for row in await inv.material_level(conn, after + 1, last)
                    if (
                        d := classify_material(
                            row["material_id"], row["balance"], row["ledger_sum"], row["sku"]
                        )
                    )
                    is not None
                ]
                done, after = done + size, last
                await _report(progress, done, total)
            states = await inv.material_states(conn, sorted({d.material_id for d in row_level}))
        found += [self._with_state(d, states) for d in row_level]
        found.sort(key=lambda d: (d.material_id, d.fingerprint))
        return found, done

    async def _row_level(
        self, conn: AnyConnection, material_id: int | None, last_id: int = 0
    ) -> list[Discrepancy]:
        """Orphans and duplicates of one material, or of all (``material_id`` None, ids up to
        ``last_id``); balance and ledger sum are not filled in."""
        found = [
            _orphan(row)
            for row in await inv.orphans(
                conn,
                material_states=sorted(self.policy.material_states),
                grace_s=self.policy.orphan_grace_s,
                material_id=material_id,
            )
        ]
        first, last = (0, last_id) if material_id is None else (material_id, material_id)
        found += [_duplicate(row) for row in await inv.duplicates(conn, first, last)]
        return found

    @staticmethod
    def _with_state(d: Discrepancy, states: dict[int, asyncpg.Record]) -> Discrepancy:
        state = states.get(d.material_id)
        if state is None:
            return d
        return replace(
            d, sku=state["sku"], balance=int(state["balance"]), ledger_sum=int(state["ledger_sum"])
        )

    # --- runs -----------------------------------------------------------------------------

    async def run(
        self,
        *,
        dry_run: bool,
        actor: str = SCHEDULER_ACTOR,
        kinds: Collection[DiscrepancyKind | str] | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """One reconciliation run.

        Dry run: detect and report (``RunReport.planned`` is what would be fixed); nothing is
        written anywhere. Otherwise: record the open discrepancies, close the ones gone, and
        fix those whose kind is in ``kinds`` (default: the policy's auto-fix kinds), one
        transaction per material. A material whose fix fails is logged (``failed``) and
        reported; the others go on.
        """
        wanted = frozenset(
            DiscrepancyKind(k) for k in (self.policy.auto_fix if kinds is None else kinds)
        )
        report = RunReport(run_id=uuid.uuid4(), actor=actor, dry_run=dry_run, kinds=wanted)
        if dry_run:
            await self._detect_into(report, progress)
            return report
        async with inv.reconciliation_lock(self.pool):
            await self._detect_into(report, progress)
            ids = await self._record(report)
            report.discrepancies = [
                replace(d, id=ids.get(d.fingerprint)) for d in report.discrepancies
            ]
            started = time.monotonic()
            targets = {d.material_id: d for d in reversed(report.planned)}
            materials = sorted(targets)
            await _report(progress, 0, len(materials))
            for done, material_id in enumerate(materials, start=1):
                outcomes = await self._fix_material_safely(
                    targets[material_id], wanted, actor, report.run_id
                )
                for outcome in outcomes:
                    (report.failed if outcome.action == "failed" else report.fixed).append(outcome)
                await _report(progress, done, len(materials))
            report.fix_s = time.monotonic() - started
        log.info("inventory reconciliation %s", report.summary())
        return report

    async def auto_fix(self, progress: Progress | None = None) -> RunReport:
        """The hourly job: a fix run of the policy's auto-fix kinds by the scheduler."""
        return await self.run(dry_run=False, actor=SCHEDULER_ACTOR, progress=progress)

    async def check_now(self, actor: str, progress: Progress | None = None) -> RunReport:
        """Admin "run a check now": detect and record the open discrepancies; fixes nothing."""
        return await self.run(dry_run=False, actor=actor, kinds=(), progress=progress)

    async def fix_all(self, actor: str, progress: Progress | None = None) -> RunReport:
        """Admin "fix all": a fix run of every kind (accepted discrepancies are left alone)."""
        return await self.run(dry_run=False, actor=actor, kinds=ALL_KINDS, progress=progress)

    async def _detect_into(self, report: RunReport, progress: Progress | None) -> None:
        started = time.monotonic()
        found, report.materials_checked = await self.detect(progress)
        accepted = await inv.accepted(self.pool, [d.fingerprint for d in found])
        report.discrepancies = [
            d for d in found if (d.fingerprint, str(d.kind), d.amount) not in accepted
        ]
        report.accepted = len(found) - len(report.discrepancies)
        report.detect_s = time.monotonic() - started

    async def _record(self, report: RunReport) -> dict[str, int]:
        """Store the open discrepancies of a run; close open rows it did not find."""
        async with self.pool.acquire() as conn, conn.transaction():
            ids = await inv.upsert_open(conn, [d.as_row() for d in report.discrepancies])
            report.resolved = await inv.resolve_gone(
                conn, [d.fingerprint for d in report.discrepancies], report.actor
            )
        return ids

    # --- fixing ---------------------------------------------------------------------------

    async def _fix_material_safely(
        self,
        target: Discrepancy,
        kinds: frozenset[DiscrepancyKind],
        actor: str,
        run_id: uuid.UUID,
        only: str | None = None,
    ) -> list[FixOutcome]:
        """``_fix_material`` for ``target``'s material; a failure is logged and returned as
        a ``failed`` outcome (the material's transaction rolled back as a whole)."""
        try:
            return await self._fix_material(target.material_id, kinds, actor, run_id, only)
        except Exception as exc:
            return [await self._record_failure(exc, target, actor, run_id)]

    async def _record_failure(
        self, exc: Exception, target: Discrepancy, actor: str, run_id: uuid.UUID
    ) -> FixOutcome:
        """Log a failed material fix outside its rolled-back transaction."""
        error = type(exc).__name__
        material_id = target.material_id
        log.warning("inventory fix of material %s failed: %s", material_id, error)
        log_id = None
        try:
            log_id = await inv.insert_log(
                self.pool,
                run_id=run_id,
                material_id=material_id,
                discrepancy=str(target.kind),
                discrepancy_id=target.id,
                action="failed",
                actor=actor,
                reason=error,
            )
        except Exception as log_exc:  # the database may be what failed
            log.warning("could not log the failed fix: %s", type(log_exc).__name__)
        if self.error_handler is not None:
            await self.error_handler.handle(
                exc, context={"job": "inventory_reconciliation", "material_id": material_id}
            )
        return FixOutcome(
            kind=target.kind,
            fingerprint=target.fingerprint,
            material_id=material_id,
            action="failed",
            discrepancy_id=target.id,
            log_id=log_id,
            error=error,
        )

    async def _fix_material(
        self,
        material_id: int,
        kinds: frozenset[DiscrepancyKind],
        actor: str,
        run_id: uuid.UUID,
        only: str | None = None,
    ) -> list[FixOutcome]:
        """Fix one material's discrepancies of ``kinds`` (or only the one with fingerprint
        ``only``, whatever its kind) in one transaction under the material's row lock."""
        outcomes: list[FixOutcome] = []
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await inv.lock_material(conn, material_id)
            if locked is None:
                return outcomes
            sku = locked["sku"]
            balance = int(locked["balance"])
            ledger = await inv.ledger_sum(conn, material_id)
            row_level = await self._row_level(conn, material_id)
            fingerprints = [d.fingerprint for d in row_level] + [f"material:{material_id}"]
            accepted = await inv.accepted(conn, fingerprints)

            def wanted(d: Discrepancy) -> bool:
                if only is not None:  # an admin's explicit choice
                    return d.fingerprint == only
                return d.kind in kinds and (d.fingerprint, str(d.kind), d.amount) not in accepted

            present: list[str] = []
            for d in row_level:
                if not wanted(d):
                    present.append(d.fingerprint)
                    continue
                before = {"balance": balance, "ledger_sum": ledger}
                if d.kind is DiscrepancyKind.ORPHANED_TRANSACTION:
                    key = f"reconcile:orphan:{material_id}:{d.request_id}:{d.details['last_id']}"
                    reverses = d.details.get("reverses_id")
                    note = f"reverses the orphaned net outflow of request {d.request_id}"
                else:
                    key = f"reconcile:duplicate:{d.transaction_id}"
                    reverses = d.transaction_id
                    note = f"reverses duplicate of {d.details['external_reference']}"
                tx_id: int | None = await inv.insert_correction(
                    conn,
                    material_id=material_id,
                    quantity=d.amount,
                    idempotency_key=key,
                    request_id=d.request_id,
                    reverses_id=reverses,
                    note=note,
                )
                balance = await inv.adjust_balance(conn, material_id, d.amount)
                ledger += d.amount
                after = {"balance": balance, "ledger_sum": ledger}
                outcomes.append(
                    await self._close_and_log(
                        conn,
                        replace(
                            d, sku=sku, balance=before["balance"], ledger_sum=before["ledger_sum"]
                        ),
                        "reversed",
                        actor,
                        run_id,
                        tx_id,
                        before,
                        after,
                    )
                )

            # Row-level fixes moved balance and ledger together; re-evaluate the material.
            material = classify_material(material_id, balance, ledger, sku)
            if material is not None and not wanted(material):
                present.append(material.fingerprint)
            elif material is not None:
                before = {"balance": balance, "ledger_sum": ledger}
                tx_id = None
                if material.kind is DiscrepancyKind.NEGATIVE_LEDGER:
                    tx_id = await inv.insert_correction(
                        conn,
                        material_id=material_id,
                        quantity=material.amount,
                        idempotency_key=f"reconcile:negative:{material_id}:{run_id}",
                        note="write-up of a negative ledger to zero",
                    )
                    ledger += material.amount
                balance = await inv.adjust_balance(conn, material_id, ledger - balance)
                after = {"balance": balance, "ledger_sum": ledger}
                outcomes.append(
                    await self._close_and_log(
                        conn, material, "adjusted", actor, run_id, tx_id, before, after
                    )
                )
            await inv.resolve_gone(conn, present, actor, material_id)
        return outcomes

    async def _close_and_log(
        self,
        conn: AnyConnection,
        d: Discrepancy,
        action: str,
        actor: str,
        run_id: uuid.UUID,
        tx_id: int | None,
        before: dict[str, int],
        after: dict[str, int],
    ) -> FixOutcome:
        discrepancy_id = await inv.close_discrepancy(
            conn, d.as_row(), status="fixed", actor=actor, reason=None
        )
        log_id = await inv.insert_log(
            conn,
            run_id=run_id,
            material_id=d.material_id,
            discrepancy=str(d.kind),
            action=action,
            actor=actor,
            transaction_id=tx_id,
            discrepancy_id=discrepancy_id,
            before=before,
            after=after,
        )
        return FixOutcome(
            kind=d.kind,
            fingerprint=d.fingerprint,
            material_id=d.material_id,
            action=action,
            amount=d.amount,
            discrepancy_id=discrepancy_id,
            transaction_id=tx_id,
            log_id=log_id,
            before=before,
            after=after,
        )

    async def _log_refusal(self, d: Discrepancy, actor: str, run_id: uuid.UUID) -> None:
        """Log an admin's fix or acceptance of a discrepancy that is no longer open as
        ``refused``, with the status it had (the trail shows the attempt, and that nothing
        was done)."""
        values = {"balance": d.balance, "ledger_sum": d.ledger_sum}
        await inv.insert_log(
            self.pool,
            run_id=run_id,
            material_id=d.material_id,
            discrepancy=str(d.kind),
            discrepancy_id=d.id,
            action="refused",
            actor=actor,
            before=values,
            after=values,
            reason=f"no longer open: {d.status}",
        )

    # --- admin operations -----------------------------------------------------------------

    async def list_open(
        self, *, kind: DiscrepancyKind | str | None = None, limit: int = 10, offset: int = 0
    ) -> DiscrepancyPage:
        """A page of open discrepancies, oldest first."""
        rows = await inv.list_open(
            self.pool, kind=str(DiscrepancyKind(kind)) if kind else None, limit=limit, offset=offset
        )
        return DiscrepancyPage(
            items=[_from_row(row) for row in rows], total=int(rows[0]["total"]) if rows else 0
        )

    async def open_counts(self) -> dict[str, int]:
        """Open discrepancies by kind (for the health screen)."""
        return await inv.open_counts(self.pool)

    async def get(self, discrepancy_id: int) -> Discrepancy:
        """One discrepancy, whatever its status.

        Raises:
            NotFoundError: no such id.
        """
        row = await inv.get_discrepancy(self.pool, discrepancy_id)
        if row is None:
            raise NotFoundError("inventory_discrepancy", discrepancy_id)
        return _from_row(row)

    async def fix_one(self, discrepancy_id: int, actor: str) -> FixOutcome:
        """Admin "fix one": fix this open discrepancy, whatever the policy says, after
        re-detecting it under the material's lock (its values may have changed since it was
        listed; the fix uses the current ones).

        Returns:
            The outcome; ``skipped`` when it was gone under the lock (then closed as
            resolved).

        Raises:
            NotFoundError: no such id.
            ConcurrentModificationError: it is no longer open (fixed, accepted or resolved
                by someone else meanwhile); logged as ``refused`` with the status it had.
        """
        run_id = uuid.uuid4()
        async with inv.reconciliation_lock(self.pool):
            d = await self.get(discrepancy_id)
            if d.status != "open":
                await self._log_refusal(d, actor, run_id)
                raise ConcurrentModificationError("inventory_discrepancy", discrepancy_id)
            try:
                outcomes = await self._fix_material(
                    d.material_id, ALL_KINDS, actor, run_id, only=d.fingerprint
                )
            except Exception as exc:
                await self._record_failure(exc, d, actor, run_id)
                raise
            if outcomes:
                return outcomes[0]
            # gone under the lock: _fix_material closed it as resolved
            values = {"balance": d.balance, "ledger_sum": d.ledger_sum}
            log_id = await inv.insert_log(
                self.pool,
                run_id=run_id,
                material_id=d.material_id,
                discrepancy=str(d.kind),
                discrepancy_id=d.id,
                action="skipped",
                actor=actor,
                before=values,
                after=values,
                reason="no longer present",
            )
        return FixOutcome(
            kind=d.kind,
            fingerprint=d.fingerprint,
            material_id=d.material_id,
            action="skipped",
            discrepancy_id=d.id,
            log_id=log_id,
            before=values,
            after=values,
        )

    async def accept(self, discrepancy_id: int, actor: str, reason: str) -> Discrepancy:
        """Admin "accept": close an open discrepancy as accepted with ``reason``. Later runs
        skip it while its fingerprint, kind and amount stay the same.

        Raises:
            InputValidationError: empty reason.
            NotFoundError: no such id.
            ConcurrentModificationError: it is no longer open; logged as ``refused``.
        """
        reason = reason.strip()
        if not reason:
            raise InputValidationError("reason", "empty")
        async with inv.reconciliation_lock(self.pool):
            d = await self.get(discrepancy_id)
            accepted = d.status == "open"
            if accepted:
                async with self.pool.acquire() as conn, conn.transaction():
                    accepted = await inv.accept(conn, discrepancy_id, actor, reason) is not None
                    if accepted:
                        values = {"balance": d.balance, "ledger_sum": d.ledger_sum}
                        await inv.insert_log(
                            conn,
                            run_id=uuid.uuid4(),
                            material_id=d.material_id,
                            discrepancy=str(d.kind),
                            action="accepted",
                            actor=actor,
                            transaction_id=d.transaction_id,
                            discrepancy_id=discrepancy_id,
                            before=values,
                            after=values,
                            reason=reason,
                        )
            if not accepted:
                await self._log_refusal(await self.get(discrepancy_id), actor, uuid.uuid4())
                raise ConcurrentModificationError("inventory_discrepancy", discrepancy_id)
        return await self.get(discrepancy_id)
