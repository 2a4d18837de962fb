"""The Bot API fake in a child process of its own (a fresh interpreter), for measurements
taken at the fake: its arrival stamps do not wait for the test process (its garbage
collection over everything a long test session holds, its other work).

Commands go over a pipe: ``webhook``, ``sends`` (how many ``sendMessage`` calls arrived),
``calls`` ((chat id, arrival time) of the accepted ones), ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI


def _serve(conn: Connection, users: list[int]) -> None:
    """Child process: run the fake with ``users`` registered until told to stop."""

    # the fake stands in for Telegram's servers, which the bot's processes do not starve of
    # CPU: where allowed (root), it runs ahead of them, so that its arrival stamps are not
    # delayed and bunched by a busy machine's scheduler
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)

    async def serve() -> None:
        async with FakeTelegramAPI(token=DEFAULT_TOKEN) as api:
            for user in users:
                api.add_user(user, f"U{user}")
            gc.freeze()  # what exists now is never collected again: shorter collections
            conn.send(api.base_url)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "webhook":
                    conn.send(api.webhook)
                elif command == "sends":
                    conn.send(sum(1 for call in api.requests if call.method == "sendMessage"))
                elif command == "calls":
                    conn.send([
                        (int(call.params["chat_id"]), call.timestamp)
                        for call in api.calls("sendMessage") if call.ok
                    ])  # fmt: skip
                else:
                    conn.send(True)
                    return

    asyncio.run(serve())


class RemoteTelegramAPI:
    """``FakeTelegramAPI`` in a spawned process with ``users`` (private chats) registered.

    Offers what ``tests.e2e.instances.Cluster`` reads of a fake (``base_url``, ``webhook``)
    and the sends it saw.
    """

    def __init__(self, users: list[int]) -> None:
        context = multiprocessing.get_context("spawn")  # not a fork of the test's big heap
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, users), daemon=True)
        self._process.start()
        self._lock = threading.Lock()
        self.base_url: str = self._conn.recv()

    def _ask(self, command: str) -> Any:
        with self._lock:
            self._conn.send(command)
            return self._conn.recv()

    @property
    def webhook(self) -> Any:
        """The webhook the bot set (None before ``setWebhook``)."""
        return self._ask("webhook")

    def sends(self) -> int:
        """``sendMessage`` calls that arrived so far."""
        return int(self._ask("sends"))

    def calls(self) -> list[tuple[int, float]]:
        """(chat id, arrival time) of every accepted ``sendMessage``, in arrival order."""
        return list(self._ask("calls"))

    def stop(self) -> None:
        """End the child process."""
        if self._process.is_alive():
            self._ask("stop")
        self._process.join(10)
