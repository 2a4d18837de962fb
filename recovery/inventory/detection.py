"""Detection of discrepancies: set-based, one snapshot, chunk by chunk."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from database import inventory as inv
from database.pool import AnyConnection
from recovery.inventory.base import ManagerBase
from recovery.inventory.model import (
    Discrepancy,
    Progress,
    classify_material,
    duplicate_discrepancy,
    orphan_discrepancy,
    report_progress,
)


class ReconciliationDetection(ManagerBase):
    """Detection of discrepancies: set-based, one snapshot, chunk by chunk."""

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
            await report_progress(progress, 0, total)
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
                await report_progress(progress, done, total)
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
            orphan_discrepancy(row)
            for row in await inv.orphans(
                conn,
                material_states=sorted(self.policy.material_states),
                grace_s=self.policy.orphan_grace_s,
                material_id=material_id,
            )
        ]
        first, last = (0, last_id) if material_id is None else (material_id, material_id)
        found += [duplicate_discrepancy(row) for row in await inv.duplicates(conn, first, last)]
        return found

    @staticmethod
    def _with_state(d: Discrepancy, states: dict[int, asyncpg.Record]) -> Discrepancy:
        state = states.get(d.material_id)
        if state is None:
            return d
        return replace(
            d, sku=state["sku"], balance=int(state["balance"]), ledger_sum=int(state["ledger_sum"])
        )
