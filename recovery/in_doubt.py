"""In-doubt resolution of ``TransactionalStateManager`` (see ``recovery.transactions``): an
attempt that failed while its COMMIT was on its way may have committed; ``transaction_log``
says whether it did, and a committed one is answered from ``resume`` instead of being
applied again."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from database import transaction_log
from recovery.exceptions import TransactionInDoubtError
from recovery.retry import TransactionRetryPolicy
from recovery.transaction_context import (
    TransactionAlreadyCommittedError,
    TransactionStats,
    is_transaction_retryable,
)

# the log lines are the transaction engine's, under its name
log = logging.getLogger("recovery.transactions")

T = TypeVar("T")

ResumeFn = Callable[[list[dict[str, Any]]], Awaitable[T]]
"""``resume(steps)``: the caller's result built from a committed attempt's recorded steps."""


class InDoubtResolution:
    """Reading ``transaction_log`` to settle an attempt whose COMMIT outcome is unknown
    (the attributes are ``TransactionalStateManager``'s)."""

    pool: asyncpg.Pool
    retry_policy: TransactionRetryPolicy
    stats: TransactionStats

    async def _resume(
        self,
        transaction_id: uuid.UUID,
        operation: str,
        found: transaction_log.CommittedEntry,
        resume: ResumeFn[T] | None,
    ) -> T:
        """The result of an attempt that committed although its caller saw it fail."""
        if resume is None:
            raise TransactionAlreadyCommittedError(transaction_id, operation)
        result = await resume(found.steps)
        self.stats.resumed += 1
        return result

    async def _committed(
        self, transaction_id: uuid.UUID, operation: str, backend_pid: int
    ) -> transaction_log.CommittedEntry | None:
        """The committed row of ``transaction_id``, or None when no attempt committed.

        A missing row proves nothing while the backend that ran the attempt in doubt
        (``backend_pid``) is still inside a transaction: its COMMIT may still reach the
        server (a cut network; a terminated backend has ended by the time its client sees
        the loss). So the lookup is repeated, backing off, up to ``in_doubt_lookups`` times.

        Raises:
            TransactionInDoubtError: that backend stayed inside its transaction.
            The database's errors (the caller retries them).
        """
        policy = self.retry_policy
        for check in range(1, policy.in_doubt_lookups + 1):
            result = await transaction_log.lookup(self.pool, transaction_id, backend_pid)
            if result.committed is not None or not result.attempt_open:
                return result.committed
            if check < policy.in_doubt_lookups:
                await asyncio.sleep(policy.delay_s(check - 1))
        self.stats.unresolved += 1
        log.warning("%s %s: the attempt in doubt is still open", operation, transaction_id)
        raise TransactionInDoubtError(transaction_id, operation)

    async def _settle(
        self,
        transaction_id: uuid.UUID,
        operation: str,
        found: transaction_log.CommittedEntry | None,
        backend_pid: int | None,
        resume: ResumeFn[T] | None,
        failure: Exception,
    ) -> T:
        """The last attempt failed while the outcome of a COMMIT was unknown (or while
        resuming one found committed): read ``transaction_log`` (up to
        ``in_doubt_lookups`` times, backing off, while the connection keeps failing) to
        answer with the real result.

        A COMMIT that completed is visible before its answer is sent, and ``_committed``
        waits until the attempt's backend has left its transaction, so a missing
        ``committed`` row means the attempt rolled back.

        Raises:
            ``failure``: nothing committed.
            TransactionInDoubtError (from ``failure``): the log (or, for a committed attempt,
                the result) stayed unreadable, or the attempt stayed open.
            TransactionAlreadyCommittedError: committed, and no ``resume`` was given.
        """
        policy = self.retry_policy
        lookups = AsyncRetrying(
            stop=stop_after_attempt(policy.in_doubt_lookups),
            wait=policy.wait_strategy(),
            retry=retry_if_exception(is_transaction_retryable),
            reraise=True,
        )
        try:
            async for lookup in lookups:
                with lookup:
                    if found is None and backend_pid is not None:
                        found = await self._committed(transaction_id, operation, backend_pid)
                    if found is not None:
                        return await self._resume(transaction_id, operation, found, resume)
        except TransactionInDoubtError as exc:
            raise exc from failure
        except Exception as exc:
            if not is_transaction_retryable(exc):
                raise
            self.stats.unresolved += 1
            log.warning(
                "%s %s: COMMIT outcome unknown after %d lookups (%s)",
                operation,
                transaction_id,
                policy.in_doubt_lookups,
                type(exc).__name__,
            )
            raise TransactionInDoubtError(transaction_id, operation) from failure
        raise failure
