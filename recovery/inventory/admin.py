"""What the admin menu does with open discrepancies: list, fix one, accept."""

from __future__ import annotations

import uuid

from database import discrepancies
from database import inventory as inv
from recovery.actors import Actor
from recovery.exceptions import ConcurrentModificationError, InputValidationError, NotFoundError
from recovery.inventory.fixing import ReconciliationFixes
from recovery.inventory.model import (
    ALL_KINDS,
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyPage,
    FixOutcome,
    discrepancy_from_row,
)


class ReconciliationAdmin(ReconciliationFixes):
    """What the admin menu does with open discrepancies: list, fix one, accept."""

    async def list_open(
        self, *, kind: DiscrepancyKind | str | None = None, limit: int = 10, offset: int = 0
    ) -> DiscrepancyPage:
        """A page of open discrepancies, oldest first."""
        rows = await discrepancies.list_open(
            self.pool, kind=str(DiscrepancyKind(kind)) if kind else None, limit=limit, offset=offset
        )
        return DiscrepancyPage(
            items=[discrepancy_from_row(row) for row in rows],
            total=int(rows[0]["total"]) if rows else 0,
        )

    async def open_counts(self) -> dict[str, int]:
        """Open discrepancies by kind (for the health screen)."""
        return await discrepancies.open_counts(self.pool)

    async def get(self, discrepancy_id: int) -> Discrepancy:
        """One discrepancy, whatever its status.

        Raises:
            NotFoundError: no such id.
        """
        row = await discrepancies.get_discrepancy(self.pool, discrepancy_id)
        if row is None:
            raise NotFoundError("inventory_discrepancy", discrepancy_id)
        return discrepancy_from_row(row)

    async def fix_one(self, discrepancy_id: int, actor: Actor) -> FixOutcome:
        """Admin "fix one": fix this open discrepancy, whatever the policy says, after
        re-detecting it under the material's lock (its values may have changed since it was
        listed; the fix uses the current ones).

        Returns:
            The outcome; ``skipped`` when it was gone under the lock (then closed as
            resolved).

        ``actor``: who fixes it; stored as its ``Actor.name``.

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
                actor=actor.name,
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

    async def accept(self, discrepancy_id: int, actor: Actor, reason: str) -> Discrepancy:
        """Admin "accept": close an open discrepancy as accepted with ``reason``. Later runs
        skip it while its fingerprint, kind and amount stay the same.

        ``actor``: who accepts it; stored as its ``Actor.name``.

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
                    accepted = (
                        await discrepancies.accept(conn, discrepancy_id, actor.name, reason)
                        is not None
                    )
                    if accepted:
                        values = {"balance": d.balance, "ledger_sum": d.ledger_sum}
                        await inv.insert_log(
                            conn,
                            run_id=uuid.uuid4(),
                            material_id=d.material_id,
                            discrepancy=str(d.kind),
                            action="accepted",
                            actor=actor.name,
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
