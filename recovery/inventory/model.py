"""The shapes of inventory reconciliation: discrepancy kinds, the policy, discrepancies,
run reports and fix outcomes, and how a material's figures classify."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from recovery.actors import Actor
from recovery.workflow_definitions import MATERIAL_STATES

log = logging.getLogger(__name__)


Progress = Callable[[int, int], Awaitable[None] | None]
"""Progress callback ``(done, total)``: materials checked of all materials during detection,
then materials fixed of the materials to fix during the fix phase."""


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
    actor: Actor
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


def orphan_discrepancy(row: asyncpg.Record) -> Discrepancy:
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


def duplicate_discrepancy(row: asyncpg.Record) -> Discrepancy:
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


def discrepancy_from_row(row: asyncpg.Record) -> Discrepancy:
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


async def report_progress(progress: Progress | None, done: int, total: int) -> None:
    if progress is None:
        return
    try:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # a failed progress message must not stop reconciliation
        log.warning("progress callback failed: %s", type(exc).__name__)
