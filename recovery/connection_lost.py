"""``is_connection_lost(exc)``: every way the database connection can be lost, as one
transient class used by the classification, the state manager, the notification sender, the
error pipeline and the outage watch.

Sources: PostgreSQL SQLSTATE codes (Appendix A of the PostgreSQL manual: class 08
connection_exception, 57P01-57P03, 25P02, 40001, 40P01) and asyncpg's own texts for a
connection that is gone (asyncpg/connection.py, pool.py, connresource.py,
protocol/coreproto.pyx). asyncpg is imported lazily.
"""

from __future__ import annotations

import errno
import socket

_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH",
                 "ENETUNREACH", "ENETDOWN", "EPIPE", "ENOTCONN", "EHOSTDOWN")
    if hasattr(errno, name)
)  # fmt: skip


# asyncpg's own texts for a connection that is gone (an ``InterfaceError`` has no SQLSTATE;
# asyncpg/connection.py, pool.py, connresource.py, protocol/protocol.pyx). A pooled
# connection whose server process died is released by the pool at once, so the caller's next
# statement says "released back to the pool"; the same text after a misuse of a released
# proxy is a bug, but a whole-transaction retry costs a bounded few attempts there, while not
# retrying a dropped connection loses the operation.
_ASYNCPG_CONNECTION_GONE = (
    "connection is closed",
    "the underlying connection is closed",
    "connection has been released back to the pool",
)
# asyncpg's ``InternalClientError`` of a protocol the server broke off (protocol/coreproto.pyx,
# ``_set_state``): a FATAL that arrives while no statement waits for it (e.g. 57P01 from
# ``pg_terminate_backend`` of an idle or idle-in-transaction backend) leaves the protocol
# consuming an error, and the next statement, or the reset at ``pool.release()``, is refused
# with "cannot switch to state 12; another operation (2) is in progress".
_ASYNCPG_PROTOCOL_BROKEN = "cannot switch to state"
# asyncpg's ``InternalClientError`` of a release that loses the race with the pool's own
# (pool.py, ``PoolConnectionHolder.release``): the server ended the connection, the pool put
# the dead connection back itself, and the caller's ``release()`` finds a free holder. It
# comes after the caller's last statement: an operation whose COMMIT was answered may see
# it, and must be looked up (in doubt), not reported failed.
_ASYNCPG_RELEASED_BY_POOL = "called on a free connection holder"

# SQLSTATEs (PostgreSQL manual, Appendix A) of a connection the server ended or refuses,
# besides class 08 connection_exception (asyncpg's ConnectionDoesNotExistError is 08003):
# 57P01 admin_shutdown (pg_terminate_backend, a fast shutdown), 57P02 crash_shutdown,
# 57P03 cannot_connect_now (the server is starting or stopping).
_CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# 40001 serialization_failure and 40P01 deadlock_detected: the server aborted the transaction,
# and a new transaction may succeed.
_TRANSACTION_ABORTED_SQLSTATES = frozenset({"40001", "40P01"})
IN_FAILED_TRANSACTION = "25P02"
"""SQLSTATE in_failed_sql_transaction: a statement sent after the transaction was aborted."""


def sqlstate_of(exc: BaseException) -> str | None:
    """The five-character SQLSTATE asyncpg puts on ``exc`` (``exc.sqlstate``), else None."""
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def _is_connection_gone(exc: BaseException) -> bool:
    """The connection itself is gone or refused (no 25P02 rule): class 08 and 57P01-57P03,
    asyncpg's texts above, and dropped or refused sockets told by type and errno."""
    sqlstate = sqlstate_of(exc)
    if sqlstate is not None:
        return sqlstate[:2] == "08" or sqlstate in _CONNECTION_LOST_SQLSTATES
    if isinstance(exc, ConnectionError | socket.gaierror):  # refused, reset, aborted, pipe
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        if exc.errno in _NETWORK_ERRNOS:
            return True
        # asyncio's create_connection over several addresses: "Multiple exceptions: [Errno
        # 111] Connect call failed ..." with errno None
        return exc.errno is None and "connect call failed" in str(exc).lower()
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, asyncpg.InternalClientError):
        text = str(exc)
        return _ASYNCPG_PROTOCOL_BROKEN in text or _ASYNCPG_RELEASED_BY_POOL in text
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        return any(phrase in text for phrase in _ASYNCPG_CONNECTION_GONE)
    return False


def failed_transaction_cause(exc: BaseException) -> BaseException | None:
    """For a 25P02 (in_failed_sql_transaction): the exception that aborted the transaction,
    when it is a lost connection or 40001/40P01, found in the ``__cause__``/``__context__``
    chain (a statement run while handling the first error); None otherwise, and for any
    other exception."""
    if sqlstate_of(exc) != IN_FAILED_TRANSACTION:
        return None
    seen: set[int] = {id(exc)}
    pending = [exc.__cause__, exc.__context__]
    while pending:
        link = pending.pop(0)
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if _is_connection_gone(link) or sqlstate_of(link) in _TRANSACTION_ABORTED_SQLSTATES:
            return link
        pending += [link.__cause__, link.__context__]
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` says the database connection (and with it the open transaction) is
    lost, so that the work can only be repeated as a whole, on another connection.

    The family (one transient class, ``classify`` reason ``connection_lost`` or its SQLSTATE's
    reason):

    - SQLSTATE class 08 (asyncpg's ``ConnectionDoesNotExistError``, 08003, "connection was
      closed in the middle of operation"), 57P01 admin_shutdown, 57P02 crash_shutdown,
      57P03 cannot_connect_now;
    - asyncpg's ``InternalClientError`` "cannot switch to state ..." (a FATAL that arrived
      between statements, e.g. at ``pool.release()`` after a terminated backend);
    - asyncpg's ``InterfaceError`` on a closed connection or one released to the pool;
    - a dropped or refused socket (``ConnectionError``, ECONNRESET, EPIPE, ...);
    - 25P02 in_failed_sql_transaction whose ``__cause__``/``__context__`` chain holds one of
      these or 40001/40P01 (``failed_transaction_cause``).

    Whether a COMMIT that failed this way took effect is unknown: the state manager looks it
    up in ``transaction_log`` (``recovery.transactions``). Never raises.
    """
    try:
        return _is_connection_gone(exc) or failed_transaction_cause(exc) is not None
    except Exception:  # pragma: no cover - a predicate must not raise
        return False


def database_unreachable(exc: BaseException) -> bool:
    """A failure that says the database cannot be reached now, not one a statement caused:
    the connection-lost family, a refused or dropped socket, a pool that gives no connection
    in time (``TimeoutError``), a closed pool (asyncpg's ``InterfaceError``)."""
    if is_connection_lost(exc) or isinstance(exc, OSError | TimeoutError):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, asyncpg.InterfaceError)
