"""Reconciliation runs: detect, record, and fix what the policy allows."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import replace

from database import discrepancies
from database import inventory as inv
from recovery.actors import SCHEDULER_ACTOR, Actor
from recovery.inventory.fixing import ReconciliationFixes
from recovery.inventory.model import (
    ALL_KINDS,
    DiscrepancyKind,
    Progress,
    RunReport,
    report_progress,
)

log = logging.getLogger(__name__)


class ReconciliationRuns(ReconciliationFixes):
    """Reconciliation runs: detect, record, and fix what the policy allows."""

    async def run(
        self,
        *,
        dry_run: bool,
        actor: Actor = SCHEDULER_ACTOR,
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
            await report_progress(progress, 0, len(materials))
            for done, material_id in enumerate(materials, start=1):
                outcomes = await self._fix_material_safely(
                    targets[material_id], wanted, actor, report.run_id
                )
                for outcome in outcomes:
                    (report.failed if outcome.action == "failed" else report.fixed).append(outcome)
                await report_progress(progress, done, len(materials))
            report.fix_s = time.monotonic() - started
        log.info("inventory reconciliation %s", report.summary())
        return report

    async def auto_fix(self, progress: Progress | None = None) -> RunReport:
        """The hourly job: a fix run of the policy's auto-fix kinds by the scheduler."""
        return await self.run(dry_run=False, actor=SCHEDULER_ACTOR, progress=progress)

    async def check_now(self, actor: Actor, progress: Progress | None = None) -> RunReport:
        """Admin "run a check now": detect and record the open discrepancies; fixes nothing."""
        return await self.run(dry_run=False, actor=actor, kinds=(), progress=progress)

    async def fix_all(self, actor: Actor, progress: Progress | None = None) -> RunReport:
        """Admin "fix all": a fix run of every kind (accepted discrepancies are left alone)."""
        return await self.run(dry_run=False, actor=actor, kinds=ALL_KINDS, progress=progress)

    async def _detect_into(self, report: RunReport, progress: Progress | None) -> None:
        started = time.monotonic()
        found, report.materials_checked = await self.detect(progress)
        accepted = await discrepancies.accepted(self.pool, [d.fingerprint for d in found])
        report.discrepancies = [
            d for d in found if (d.fingerprint, str(d.kind), d.amount) not in accepted
        ]
        report.accepted = len(found) - len(report.discrepancies)
        report.detect_s = time.monotonic() - started

    async def _record(self, report: RunReport) -> dict[str, int]:
        """Store the open discrepancies of a run; close open rows it did not find."""
        async with self.pool.acquire() as conn, conn.transaction():
            ids = await discrepancies.upsert_open(conn, [d.as_row() for d in report.discrepancies])
            report.resolved = await discrepancies.resolve_gone(
                conn, [d.fingerprint for d in report.discrepancies], report.actor.name
            )
        return ids
