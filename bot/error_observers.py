"""``ObservedErrorHandler``: the core's ``ErrorHandler`` plus observers (metrics, Sentry).

Observers are called after each error is recorded, with the ``ErrorRecord`` and the
exception. They must be quick and must not raise; one that does is logged and skipped, so
an observer can never turn an error report into a new failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from bot.metrics import Metrics
from recovery.errors import ErrorHandler, ErrorRecord

log = logging.getLogger(__name__)

ErrorObserver = Callable[[ErrorRecord, BaseException], None]


class ObservedErrorHandler(ErrorHandler):
    """An ``ErrorHandler`` that tells ``observers`` about every error it recorded.

    Takes the ``ErrorHandler``'s arguments plus ``observers``.
    """

    def __init__(self, *args: Any, observers: Sequence[ErrorObserver] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.observers: list[ErrorObserver] = list(observers)

    async def handle(self, exc: BaseException, **kwargs: Any) -> ErrorRecord:
        """``ErrorHandler.handle``, then every observer."""
        record = await super().handle(exc, **kwargs)
        for observer in self.observers:
            try:
                observer(record, exc)
            except Exception as observer_exc:
                log.warning("error observer %r failed: %s", observer, type(observer_exc).__name__)
        return record


def count_errors(metrics: Metrics) -> ErrorObserver:
    """An observer counting errors by category and severity in ``bot_errors_total``."""

    def observe(record: ErrorRecord, exc: BaseException) -> None:
        metrics.observe_error(record.category.value, record.severity.value)

    return observe
