"""The error pipeline: occurrences coalesced by fingerprint in memory, written in batches,
held (bounded) while PostgreSQL is unreachable.

One in-process buffer does both jobs:

- *Coalescing.* ``record`` finds the occurrence's group from the raw traceback
  (``group_key``) and a cache of fingerprints; only a group new to this process (or whose
  sample is older than ``sample_refresh_s``) pays for masking and trace extraction
  (``ErrorRecord.from_exception``). The occurrence adds one to its group's pending count
  (and to its UTC hour). A flush task writes every pending group at most ``window_s``
  seconds after the first occurrence it holds, all groups in one statement
  (``database.error_records.record_batch``: counters, hourly rollup, reference aliases).
- *Spool.* When a flush fails (PostgreSQL stopped, connection lost, pool timeout, any
  error), the batch is kept as it was and retried first, with capped exponential backoff
  (``backoff_base_s * 2**attempt``, at most ``backoff_max_s``); new occurrences keep
  coalescing behind it. At most ``max_groups`` groups are held (the failed batch and the
  pending ones together); past that the oldest group is dropped, counted in
  ``spool.dropped_groups``/``spool.dropped_occurrences``, logged and reported to ``on_drop``.

Counts are exact: each batch carries this writer's flush number, and the database applies a
number once (``error_flush_marks``), so a batch retried after a lost answer (its COMMIT may
have happened) is not counted twice.

The reference a user is shown is known before anything is written: the group's stored
reference once this process has seen it, else ``group_reference(fingerprint)``; the batch
writes an alias when the two differ, so both resolve in the admin's lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from database import error_records
from database.error_records import GroupOccurrences, StoredGroup
from recovery.classification import ErrorSeverity, classify
from recovery.connection_lost import database_unreachable
from recovery.error_model import ErrorRecord, fingerprint, group_key, group_reference
from recovery.error_spool import ErrorSpool, HeldGroup, utc
from recovery.masked_output import mask_value
from recovery.masking import mask_sensitive

__all__ = ["ErrorPipeline", "KnownGroup"]

log = logging.getLogger(__name__)

_KEY_CACHE_MAX = 4096
STOP_RETRY_S = 0.5
"""Seconds between two writes of what is held while ``stop`` waits for the database."""
_KNOWN_MAX = 20_000


@dataclass(slots=True)
class KnownGroup:
    """A group this process has seen: its masked sample and what the database last said.

    ``reference`` is what users are shown (the stored one once known); ``id``,
    ``occurrence_count`` and ``status`` are None/0 until a batch with the group was written.
    """

    reference: str
    sample: ErrorRecord
    sampled_at: float
    id: int | None = None
    occurrence_count: int = 0
    status: str | None = None


class ErrorPipeline:
    """Coalesce, batch and spool error occurrences (see the module docstring).

    Args:
        pool: asyncpg pool.
        window_s: seconds an occurrence may wait before its batch is written
            (``ERROR_FLUSH_WINDOW_S``).
        max_groups: groups held at most, pending and failed together
            (``ERROR_SPOOL_MAX_GROUPS``); past it the oldest group is dropped.
        store_timeout_s: seconds to wait for a pooled connection per flush attempt.
        backoff_base_s, backoff_max_s: retry delays of a failed flush (seconds; capped
            exponential, ``ERROR_FLUSH_BACKOFF_MAX_S``).
        sample_refresh_s: seconds after which a group's sample (message, trace, context) is
            taken again from a new occurrence.
        extra_secrets: literal secrets masked wherever they appear.
        on_drop: called with the number of occurrences of each dropped group.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        window_s: float = 0.1,
        max_groups: int = 10_000,
        store_timeout_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 5.0,
        sample_refresh_s: float = 3600.0,
        extra_secrets: Sequence[str] = (),
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.pool = pool
        self.window_s = window_s
        self.store_timeout_s = store_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = max(backoff_max_s, backoff_base_s)
        self.sample_refresh_s = sample_refresh_s
        self.extra_secrets = tuple(s for s in extra_secrets if s)
        self.spool = ErrorSpool(max_groups, on_drop=on_drop, forget=self._forget)
        self.writer = uuid.uuid4()
        self.unreachable_since: float | None = None
        """Epoch seconds of the first failed flush of the current failure, else None."""
        self._seq = 0
        self._keys: dict[tuple[str, str, str], str] = {}
        self._known: dict[str, KnownGroup] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.spooled_total = 0
        """Occurrences held because the database could not take them (monotonic): those of
        the batch whose write failed first, then every one recorded until a write succeeds.
        An outage's share is its growth over the outage (the outage alert)."""

    # --- recording (synchronous: no await between the occurrence and its count) -----------
    def record(self, exc: BaseException, context: Mapping[str, Any] | None = None) -> ErrorRecord:
        """Count one occurrence of ``exc`` and return its record: classification, the
        group's masked sample (message, location, trace) and the reference to show.

        ``record.occurrence_count`` is the group's count as far as this process knows
        (stored plus held); the stored count is exact once the batch is written.
        ``context`` is masked and kept when this occurrence becomes the group's sample; a
        critical error (reported to Sentry with it) gets its own context masked.
        """
        verdict = classify(exc)
        now = time.time()
        key = group_key(exc)
        fp = self._keys.get(key)
        if fp is None:
            masked = mask_sensitive(key[2], extra_secrets=self.extra_secrets)
            fp = fingerprint(key[0], key[1], masked)
            if len(self._keys) >= _KEY_CACHE_MAX:
                del self._keys[next(iter(self._keys))]
            self._keys[key] = fp
        known = self._known.get(fp)
        sample: ErrorRecord | None = None
        if known is None or now - known.sampled_at > self.sample_refresh_s:
            sample = ErrorRecord.from_exception(
                exc, context=context, classification=verdict, extra_secrets=self.extra_secrets
            )
            fp = sample.fingerprint
            if known is None:
                self._forget_idle_groups()
                known = self._known[fp] = KnownGroup(group_reference(fp), sample, now)
            known.sample, known.sampled_at = sample, now
            record = sample
        else:
            base = known.sample
            occurrence_context = base.context
            if verdict.severity is ErrorSeverity.CRITICAL and context:
                occurrence_context = {
                    **base.context,
                    **mask_value(dict(context), extra_secrets=self.extra_secrets),
                }
            record = ErrorRecord(
                error_type=base.error_type,
                message=base.message,
                category=verdict.category,
                severity=verdict.severity,
                location=base.location,
                fingerprint=fp,
                stack_trace=base.stack_trace,
                context=occurrence_context,
                classification=verdict,
            )
        self._add(fp, known, now, sample)
        record.reference = known.reference
        record.record_id = known.id
        record.status = known.status
        record.occurrence_count = known.occurrence_count + self.spool.count(fp)
        return record

    def _add(self, fp: str, known: KnownGroup, now: float, sample: ErrorRecord | None) -> None:
        self.spool.add(fp, known.reference, now, sample)
        if self.unreachable_since is not None:
            self.spooled_total += 1
        if not self._wake.is_set():
            self._wake.set()

    def _forget(self, fp: str) -> None:
        self._known.pop(fp, None)

    def _forget_idle_groups(self) -> None:
        """Keep at most ``_KNOWN_MAX`` known groups: forget the oldest not held."""
        if len(self._known) < _KNOWN_MAX:
            return
        for fp in list(self._known)[: _KNOWN_MAX // 10]:
            if not self.spool.holds(fp):
                del self._known[fp]

    @property
    def held_groups(self) -> int:
        """Groups held in memory, not yet written (``ErrorSpool.groups``)."""
        return self.spool.groups

    @property
    def held_occurrences(self) -> int:
        """Occurrences held in memory, not yet written."""
        return self.spool.occurrences

    def group(self, fp: str) -> KnownGroup | None:
        """What this process knows of the group ``fp``."""
        return self._known.get(fp)

    # --- writing ----------------------------------------------------------------------------
    async def flush(self) -> bool:
        """Write the failed batch (if any), then the pending groups, each one statement.

        Returns True when everything held at the call is written (occurrences that arrive
        meanwhile wait for the next flush), False when a write failed (the data is kept for
        the next attempt). Never raises (except cancellation).
        """
        async with self._lock:
            # the failed batch (if any), then the groups pending now
            for _ in range(2 if self.spool.failed is not None else 1):
                batch = self.spool.take(self._seq + 1)
                if batch is None:
                    return True
                self._seq = max(self._seq, batch[0])
                if not await self._write(*batch):
                    return False
                self.spool.written()
            return True

    async def _write(self, seq: int, batch: dict[str, HeldGroup]) -> bool:
        groups = [self._payload(fp, held) for fp, held in batch.items()]
        try:
            async with self.pool.acquire(timeout=self.store_timeout_s) as conn:
                stored = await error_records.record_batch(conn, groups, writer=self.writer, seq=seq)
        except Exception as exc:
            self._failure(exc, batch)
            return False
        if stored is not None:
            self._learn(stored)
        if self.unreachable_since is not None:
            log.warning(
                "error records written again after %.1f s: %d occurrences of %d groups "
                "from the spool",
                time.time() - self.unreachable_since, sum(p.n for p in batch.values()),
                len(batch),
            )  # fmt: skip
            self.unreachable_since = None
        return True

    def _payload(self, fp: str, held: HeldGroup) -> GroupOccurrences:
        known = self._known.get(fp)
        sample = held.sample or (known.sample if known is not None else None)
        assert sample is not None
        new_sample = held.sample is not None
        return GroupOccurrences(
            fingerprint=fp,
            reference=held.reference,
            category=sample.category.value,
            severity=sample.severity.value,
            error_type=sample.error_type,
            message=sample.message,
            location=sample.location,
            stack_trace=sample.stack_trace if new_sample else None,
            context_json=json.dumps(sample.context, default=str) if new_sample else None,
            n=held.n,
            first_seen_at=utc(held.first),
            last_seen_at=utc(held.last),
            hours={utc(hour): n for hour, n in held.hours.items()},
        )

    def _learn(self, stored: list[StoredGroup]) -> None:
        for group in stored:
            known = self._known.get(group.fingerprint)
            if known is not None:
                known.id, known.reference = group.id, group.reference
                known.occurrence_count, known.status = group.occurrence_count, group.status

    def _failure(self, exc: BaseException, batch: dict[str, HeldGroup]) -> None:
        lost = database_unreachable(exc)
        first = self.unreachable_since is None
        if first:
            self.unreachable_since = time.time()
            self.spooled_total += sum(held.n for held in batch.values())
        log.log(
            logging.WARNING if lost else logging.ERROR,
            "could not write error records (%s: %s): holding %d occurrences of %d groups%s",
            type(exc).__name__,
            mask_sensitive(str(exc), extra_secrets=self.extra_secrets)[:300],
            self.held_occurrences, self.held_groups,
            "" if first else " (still failing)",
        )  # fmt: skip

    # --- the flush task ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the flush task (idempotent)."""
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="error-pipeline-flush")

    async def run(self) -> None:
        """The flush loop until ``stop``, in the caller's task: how a supervisor runs it
        (``start`` runs it as a task of its own instead)."""
        self._stop.clear()
        await self._run()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless asked to stop; True when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            wake = asyncio.ensure_future(self._wake.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({wake, stop}, return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            stop.cancel()
            if self._stop.is_set() or await self._sleep(self.window_s):
                return
            self._wake.clear()
            try:
                written = await self.flush()
            except Exception:  # never expected: flush() catches; keep the task alive
                log.exception("error pipeline flush raised")
                written = False
            if written:
                attempt = 0
                continue
            delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
            attempt += 1
            self._wake.set()  # held data: try again after the delay
            if await self._sleep(delay):
                return

    async def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the flush task and write what is held, trying again every
        ``STOP_RETRY_S`` seconds within ``timeout_s`` seconds (a database that comes back
        during the stop still gets the outage's errors).

        Returns True when nothing is left unwritten; otherwise logs what is lost.
        """
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        written = False
        while not written and (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                written = await asyncio.wait_for(self.flush(), remaining)
            if not written:
                await asyncio.sleep(min(STOP_RETRY_S, max(0.0, deadline - loop.time())))
        if not written and self.held_occurrences:
            log.error(
                "error records not written at shutdown: %d occurrences of %d groups",
                self.held_occurrences, self.held_groups,
            )  # fmt: skip
        return written
