"""The error pipeline's memory: occurrences held by fingerprint until they are written.

Two parts: the *pending* groups (occurrences of the current window) and at most one
*failed* batch (a write that did not succeed, kept exactly as it was, with its flush number,
so that its retry is recognised by the database if its first attempt did commit). Both
together are bounded by ``max_groups``; past it the oldest group (the failed batch's first,
else the oldest pending one) is dropped, counted, logged and reported to ``on_drop``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from recovery.error_model import ErrorRecord

__all__ = ["ErrorSpool", "HeldGroup", "utc"]

log = logging.getLogger(__name__)


def utc(epoch_s: float) -> datetime:
    """Epoch seconds as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(epoch_s, UTC)


@dataclass(slots=True)
class HeldGroup:
    """Occurrences of one group not yet written (times: epoch seconds).

    ``reference``: what the users of these occurrences were shown; ``hours``: occurrences
    per UTC hour (epoch seconds of the hour); ``sample``: a new masked sample to write with
    them, if any.
    """

    reference: str
    first: float
    last: float
    n: int = 0
    hours: dict[int, int] = field(default_factory=dict)
    sample: ErrorRecord | None = None


class ErrorSpool:
    """Pending groups and the failed batch, bounded together by ``max_groups``.

    Args:
        max_groups: groups held at most (``ERROR_SPOOL_MAX_GROUPS``).
        on_drop: called with the number of occurrences of each dropped group (a metric).
        forget: called with the fingerprint of a dropped group that is no longer held at
            all (its sample may never have been written: take a new one next time).
    """

    def __init__(
        self,
        max_groups: int,
        *,
        on_drop: Callable[[int], None] | None = None,
        forget: Callable[[str], ErrorRecord | None] | None = None,
    ) -> None:
        if max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        self.max_groups = max_groups
        self.on_drop = on_drop
        self.forget = forget
        self.pending: dict[str, HeldGroup] = {}
        self.failed: tuple[int, dict[str, HeldGroup]] | None = None
        self.dropped_groups = 0
        self.dropped_occurrences = 0

    def add(self, fp: str, reference: str, now: float, sample: ErrorRecord | None) -> None:
        """Hold one occurrence of group ``fp`` seen at ``now`` (epoch seconds)."""
        held = self.pending.get(fp)
        if held is None:
            held = self.pending[fp] = HeldGroup(reference, now, now)
            self._enforce_bound()
        held.n += 1
        held.last = now
        hour = int(now // 3600) * 3600
        held.hours[hour] = held.hours.get(hour, 0) + 1
        if sample is not None:
            held.sample = sample

    def take(self, seq: int) -> tuple[int, dict[str, HeldGroup]] | None:
        """The batch to write next: the failed one, else the pending groups as a new
        batch numbered ``seq`` (then no longer pending); None when nothing is held."""
        if self.failed is None and self.pending:
            self.failed, self.pending = (seq, self.pending), {}
        return self.failed

    def written(self) -> None:
        """The batch from ``take`` was written (or found written before)."""
        self.failed = None

    def holds(self, fp: str) -> bool:
        """True when occurrences of ``fp`` are held."""
        return fp in self.pending or (self.failed is not None and fp in self.failed[1])

    def count(self, fp: str) -> int:
        """Occurrences of ``fp`` held."""
        held = self.pending.get(fp)
        n = held.n if held is not None else 0
        if self.failed is not None and fp in self.failed[1]:
            n += self.failed[1][fp].n
        return n

    @property
    def groups(self) -> int:
        """Groups held (pending and failed batch; one group may be in both)."""
        return len(self.pending) + (len(self.failed[1]) if self.failed else 0)

    @property
    def occurrences(self) -> int:
        """Occurrences held, not yet written."""
        failed = sum(p.n for p in self.failed[1].values()) if self.failed else 0
        return failed + sum(p.n for p in self.pending.values())

    def _enforce_bound(self) -> None:
        while self.groups > self.max_groups:
            batch = self.failed[1] if self.failed is not None and self.failed[1] else self.pending
            fp = next(iter(batch))
            dropped = batch.pop(fp)
            later = self.pending.get(fp) if batch is not self.pending else None
            if later is None:
                if self.forget is not None:
                    self.forget(fp)
            elif later.sample is None:  # the sample goes on with the occurrences still held
                later.sample = dropped.sample
            self.dropped_groups += 1
            self.dropped_occurrences += dropped.n
            log.warning(
                "error spool full (%d groups): dropped the oldest group %s (%d occurrences "
                "since %s); %d groups dropped so far",
                self.max_groups, dropped.reference, dropped.n,
                utc(dropped.first).isoformat(timespec="seconds"), self.dropped_groups,
            )  # fmt: skip
            if self.on_drop is not None:
                with contextlib.suppress(Exception):
                    self.on_drop(dropped.n)
