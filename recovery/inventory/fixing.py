"""Fixing one material under its row lock, and the log rows of fixes and refusals."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace

from database import discrepancies
from database import inventory as inv
from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.inventory.detection import ReconciliationDetection
from recovery.inventory.model import (
    Discrepancy,
    DiscrepancyKind,
    FixOutcome,
    classify_material,
)

log = logging.getLogger(__name__)


class ReconciliationFixes(ReconciliationDetection):
    """Fixing one material under its row lock, and the log rows of fixes and refusals."""

    async def _fix_material_safely(
        self,
        target: Discrepancy,
        kinds: frozenset[DiscrepancyKind],
        actor: Actor,
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
        self, exc: Exception, target: Discrepancy, actor: Actor, run_id: uuid.UUID
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
                actor=actor.name,
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
        actor: Actor,
        run_id: uuid.UUID,
        only: str | None = None,
    ) -> list[FixOutcome]:
        """Fix one material's discrepancies of ``kinds`` (or only the one with fingerprint
        ``only``, whatever its kind) in one transaction under the material's row lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await inv.lock_material(conn, material_id)
            if locked is None:
                return []
            stock = _Stock(
                material_id,
                locked["sku"],
                int(locked["balance"]),
                await inv.ledger_sum(conn, material_id),
            )
            row_level = await self._row_level(conn, material_id)
            fingerprints = [d.fingerprint for d in row_level] + [f"material:{material_id}"]
            accepted = await discrepancies.accepted(conn, fingerprints)

            def wanted(d: Discrepancy) -> bool:
                return _is_wanted(d, kinds, only, accepted)

            present = [d.fingerprint for d in row_level if not wanted(d)]
            outcomes = [
                await self._reverse_row(conn, d, stock, actor, run_id)
                for d in row_level
                if wanted(d)
            ]
            # Row-level fixes moved balance and ledger together; re-evaluate the material.
            material = classify_material(material_id, stock.balance, stock.ledger, stock.sku)
            if material is not None and not wanted(material):
                present.append(material.fingerprint)
            elif material is not None:
                outcomes.append(await self._adjust_material(conn, material, stock, actor, run_id))
            await discrepancies.resolve_gone(conn, present, actor.name, material_id)
        return outcomes

    async def _reverse_row(
        self,
        conn: AnyConnection,
        d: Discrepancy,
        stock: _Stock,
        actor: Actor,
        run_id: uuid.UUID,
    ) -> FixOutcome:
        """Reverse one orphaned or duplicate ledger row with a correction, move the balance
        with it (``stock`` follows) and close the discrepancy as ``reversed``."""
        before = stock.values()
        if d.kind is DiscrepancyKind.ORPHANED_TRANSACTION:
            key = f"reconcile:orphan:{stock.material_id}:{d.request_id}:{d.details['last_id']}"
            reverses = d.details.get("reverses_id")
            note = f"reverses the orphaned net outflow of request {d.request_id}"
        else:
            key = f"reconcile:duplicate:{d.transaction_id}"
            reverses = d.transaction_id
            note = f"reverses duplicate of {d.details['external_reference']}"
        tx_id: int | None = await inv.insert_correction(
            conn,
            material_id=stock.material_id,
            quantity=d.amount,
            idempotency_key=key,
            request_id=d.request_id,
            reverses_id=reverses,
            note=note,
        )
        stock.balance = await inv.adjust_balance(conn, stock.material_id, d.amount)
        stock.ledger += d.amount
        fixed = replace(
            d, sku=stock.sku, balance=before["balance"], ledger_sum=before["ledger_sum"]
        )
        return await self._close_and_log(
            conn, fixed, "reversed", actor, run_id, tx_id, before, stock.values()
        )

    async def _adjust_material(
        self,
        conn: AnyConnection,
        material: Discrepancy,
        stock: _Stock,
        actor: Actor,
        run_id: uuid.UUID,
    ) -> FixOutcome:
        """Fix a material-level discrepancy: a negative ledger is written up to zero by a
        correction; then the balance is set to the ledger sum (``stock`` follows); the
        discrepancy is closed as ``adjusted``."""
        before = stock.values()
        tx_id = None
        if material.kind is DiscrepancyKind.NEGATIVE_LEDGER:
            tx_id = await inv.insert_correction(
                conn,
                material_id=stock.material_id,
                quantity=material.amount,
                idempotency_key=f"reconcile:negative:{stock.material_id}:{run_id}",
                note="write-up of a negative ledger to zero",
            )
            stock.ledger += material.amount
        stock.balance = await inv.adjust_balance(
            conn, stock.material_id, stock.ledger - stock.balance
        )
        return await self._close_and_log(
            conn, material, "adjusted", actor, run_id, tx_id, before, stock.values()
        )

    async def _close_and_log(
        self,
        conn: AnyConnection,
        d: Discrepancy,
        action: str,
        actor: Actor,
        run_id: uuid.UUID,
        tx_id: int | None,
        before: dict[str, int],
        after: dict[str, int],
    ) -> FixOutcome:
        discrepancy_id = await discrepancies.close_discrepancy(
            conn, d.as_row(), status="fixed", actor=actor.name, reason=None
        )
        log_id = await inv.insert_log(
            conn,
            run_id=run_id,
            material_id=d.material_id,
            discrepancy=str(d.kind),
            action=action,
            actor=actor.name,
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

    async def _log_refusal(self, d: Discrepancy, actor: Actor, run_id: uuid.UUID) -> None:
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
            actor=actor.name,
            before=values,
            after=values,
            reason=f"no longer open: {d.status}",
        )


@dataclass(slots=True)
class _Stock:
    """One locked material during its fix: the balance and the ledger sum as the fixes so
    far left them (units of the material)."""

    material_id: int
    sku: str
    balance: int
    ledger: int

    def values(self) -> dict[str, int]:
        """The ``before``/``after`` figures of a log row: ``balance`` and ``ledger_sum``."""
        return {"balance": self.balance, "ledger_sum": self.ledger}


def _is_wanted(
    d: Discrepancy,
    kinds: frozenset[DiscrepancyKind],
    only: str | None,
    accepted: set[tuple[str, str, int]],
) -> bool:
    """Whether a fix run fixes ``d``: an admin's explicit choice (``only``: that fingerprint
    alone); otherwise one of ``kinds`` not accepted as it is (fingerprint, kind, amount)."""
    if only is not None:  # an admin's explicit choice
        return d.fingerprint == only
    return d.kind in kinds and (d.fingerprint, str(d.kind), d.amount) not in accepted
