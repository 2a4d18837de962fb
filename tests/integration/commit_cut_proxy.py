"""A TCP proxy in front of PostgreSQL that loses COMMIT answers: a real network fault.

Clients connect to ``proxy.dsn``; each connection is relayed to the server named by the
upstream DSN (TCP host and port, or pgserver's Unix socket directory in ``?host=``). With
probability ``cut_probability`` a client's ``COMMIT`` (asyncpg sends ``COMMIT;`` as a simple
Query message) is forwarded, the server is given ``settle_s`` seconds to commit, and the
connection is cut on both sides before the answer reaches the client: the transaction
committed, the client sees its connection lost in the middle of COMMIT. ``OutageProxy``
takes the database away altogether (``down``/``up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from urllib.parse import parse_qs, urlsplit, urlunsplit

# Frontend Query message of asyncpg's Transaction.commit(): 'Q', int32 length (4 + 8), text
COMMIT_QUERY = b"Q\x00\x00\x00\x0cCOMMIT;\x00"


class CommitCutProxy:
    """Relay connections to ``upstream_dsn``, cutting some right after a COMMIT was sent.

    Attributes:
        cuts: COMMITs forwarded whose answer was withheld (the connection was cut).
    """

    def __init__(
        self, upstream_dsn: str, *, cut_probability: float, settle_s: float = 0.05
    ) -> None:
        self.upstream = urlsplit(upstream_dsn)
        self.cut_probability = cut_probability
        self.settle_s = settle_s
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def dsn(self) -> str:
        """The upstream DSN with the proxy's address instead of the server's."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        user = self.upstream.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", self.upstream.path, "", ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = parse_qs(self.upstream.query).get("host", [""])[0]
        port = self.upstream.port or 5432
        if socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self.upstream.hostname or "127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        muted = asyncio.Event()  # set: nothing more reaches the client

        async def to_server() -> None:
            while data := await reader.read(65536):
                cut = COMMIT_QUERY in data and random.random() < self.cut_probability
                if cut:
                    muted.set()
                up_writer.write(data)
                await up_writer.drain()
                if cut:
                    self.cuts += 1
                    await asyncio.sleep(self.settle_s)  # the server commits meanwhile
                    return

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if muted.is_set():
                    return
                writer.write(data)
                await writer.drain()

        try:
            relays = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        finally:
            for stream in (writer, up_writer):
                stream.close()
                with contextlib.suppress(Exception):
                    await stream.wait_closed()
            self._tasks.discard(task)


class OutageProxy(CommitCutProxy):
    """A TCP relay to PostgreSQL that can be taken down: ``down()`` cuts every relayed
    connection and refuses new ones until ``up()``."""

    def __init__(self, upstream_dsn: str) -> None:
        super().__init__(upstream_dsn, cut_probability=0.0)
        self.is_down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            writer.close()
            return
        await super()._accept(reader, writer)

    async def down(self) -> None:
        self.is_down = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def up(self) -> None:
        self.is_down = False
