"""``is_connection_lost``: one predicate for every way asyncpg tells that the connection (and
with it the open transaction) is gone, and ``classify`` agreeing with it. The exceptions are
built the way asyncpg builds them (its classes and its own texts, asyncpg 0.30: pool.py,
connresource.py, protocol/coreproto.pyx); the same family provoked on a real server is in
``tests/integration/test_error_classification_pg.py``."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from recovery.classification import (
    ErrorCategory,
    ErrorSeverity,
    RetryStrategy,
    classify,
    failed_transaction_cause,
    is_connection_lost,
)
from recovery.exceptions import TransactionInDoubtError
from recovery.transaction_context import commit_outcome_unknown, is_transaction_retryable

E = asyncpg.exceptions


def in_failed_transaction(cause: BaseException | None, *, explicit: bool = False) -> BaseException:
    """The 25P02 a statement gets when sent while handling ``cause`` (its ``__context__``),
    or re-raised ``from cause`` (its ``__cause__``)."""
    error = E.InFailedSQLTransactionError(
        "current transaction is aborted, commands ignored until end of transaction block"
    )
    if cause is None:
        return error
    try:
        try:
            raise cause
        except Exception as first:
            if explicit:
                raise error from first
            raise error  # noqa: B904 - the implicit __context__ is what is tested
    except E.InFailedSQLTransactionError as exc:
        return exc


LOST: dict[str, Callable[[], BaseException]] = {
    "08003 ConnectionDoesNotExistError": lambda: E.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "08006 connection failure": lambda: E.ConnectionFailureError("server closed the connection"),
    "08001 client cannot connect": lambda: E.ClientCannotConnectError("could not connect"),
    "57P01 admin shutdown (pg_terminate_backend)": lambda: E.AdminShutdownError(
        "terminating connection due to administrator command"
    ),
    "57P02 crash shutdown": lambda: E.CrashShutdownError("terminating connection because of crash"),
    "57P03 cannot connect now": lambda: E.CannotConnectNowError("the database is starting up"),
    "InternalClientError after an unsolicited FATAL": lambda: E.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
    "InternalClientError on a failed protocol": lambda: E.InternalClientError(
        'cannot switch to state 15; protocol is in the "failed" state'
    ),
    "InternalClientError: release after the pool put the dead connection back": lambda: (
        E.InternalClientError("PoolConnectionHolder.release() called on a free connection holder")
    ),
    "InterfaceError: connection is closed": lambda: asyncpg.InterfaceError(
        "cannot perform operation: connection is closed"
    ),
    "InterfaceError: released proxy": lambda: asyncpg.InterfaceError(
        "cannot call Connection.fetchval(): connection has been released back to the pool"
    ),
    "InterfaceError: transaction of a closed connection": lambda: asyncpg.InterfaceError(
        "cannot call Transaction.rollback(): the underlying connection is closed"
    ),
    "ConnectionResetError": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "BrokenPipeError": lambda: BrokenPipeError(32, "Broken pipe"),
    "25P02 after a deadlock": lambda: in_failed_transaction(E.DeadlockDetectedError("deadlock")),
    "25P02 after a serialization failure": lambda: in_failed_transaction(
        E.SerializationError("could not serialize access")
    ),
    "25P02 raised from a lost connection": lambda: in_failed_transaction(
        E.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
        explicit=True,
    ),
}

NOT_LOST: dict[str, Callable[[], BaseException]] = {
    "25P02 after a unique violation": lambda: in_failed_transaction(
        E.UniqueViolationError("duplicate key")
    ),
    "25P02 alone": lambda: in_failed_transaction(None),
    "40P01 deadlock (transient, but the connection is fine)": lambda: E.DeadlockDetectedError(
        "deadlock detected"
    ),
    "InterfaceError: concurrent use of one connection (a bug)": lambda: asyncpg.InterfaceError(
        "cannot perform operation: another operation is in progress"
    ),
    "InternalClientError of another kind": lambda: E.InternalClientError(
        "unexpected error while performing authentication: x"
    ),
    "ProtocolError": lambda: E.ProtocolError("unexpected message"),
    "TimeoutError": lambda: TimeoutError(),
    "FileNotFoundError": lambda: FileNotFoundError(2, "No such file or directory"),
    "RuntimeError": lambda: RuntimeError("connection is closed"),  # text alone is not enough
}


@pytest.mark.parametrize("name", list(LOST))
def test_the_connection_lost_family_is_one_transient_class(name: str) -> None:
    exc = LOST[name]()
    assert is_connection_lost(exc)
    verdict = classify(exc)
    assert verdict.category is ErrorCategory.TRANSIENT
    assert verdict.strategy is RetryStrategy.TRANSACTION and verdict.retryable
    assert is_transaction_retryable(exc)


@pytest.mark.parametrize("name", list(LOST))
def test_a_lost_connection_during_commit_leaves_the_outcome_unknown(name: str) -> None:
    assert commit_outcome_unknown(LOST[name]())


@pytest.mark.parametrize("name", list(NOT_LOST))
def test_look_alikes_are_not_a_lost_connection(name: str) -> None:
    assert not is_connection_lost(NOT_LOST[name]())


def test_a_25p02_is_classified_by_the_error_that_aborted_its_transaction() -> None:
    after_deadlock = in_failed_transaction(E.DeadlockDetectedError("deadlock"))
    assert isinstance(failed_transaction_cause(after_deadlock), E.DeadlockDetectedError)
    verdict = classify(after_deadlock)
    assert (verdict.reason, verdict.code) == ("deadlock", "25P02")

    after_unique = in_failed_transaction(E.UniqueViolationError("duplicate key"))
    assert failed_transaction_cause(after_unique) is None
    assert classify(after_unique).category is ErrorCategory.SYSTEM  # a bug: it went on


def test_a_cycle_in_the_exception_chain_ends() -> None:
    exc = in_failed_transaction(E.UniqueViolationError("duplicate key"))
    assert exc.__context__ is not None
    exc.__context__.__context__ = exc  # a cycle
    assert not is_connection_lost(exc)


def test_a_server_answer_during_commit_is_a_known_rollback() -> None:
    assert not commit_outcome_unknown(E.SerializationError("could not serialize"))
    assert not commit_outcome_unknown(E.UniqueViolationError("deferred constraint"))


def test_an_unresolved_commit_is_not_retried() -> None:
    verdict = classify(TransactionInDoubtError("0000", "advance"))
    assert (verdict.category, verdict.severity) == (ErrorCategory.SYSTEM, ErrorSeverity.HIGH)
    assert verdict.reason == "outcome_unknown"
    assert not verdict.retryable
    assert not is_transaction_retryable(TransactionInDoubtError("0000", "advance"))
