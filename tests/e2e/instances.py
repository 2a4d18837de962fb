"""Helpers for end-to-end tests of several bot processes in webhook mode.

Telegram would post updates to the load balancer; here the test posts Telegram Update JSON
(built by the Bot API fake's ``push_message``/``push_callback``) straight to each
instance's webhook endpoint with the secret token header, and reads each instance's
``/metrics``. ``HoldingTelegramAPI`` is the Bot API fake with a hung ``sendMessage`` for
chosen chats (a slow or stalled Telegram), to catch an instance mid-work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import bot_env, spawn_bot
from tests.fakes.remote_api import RemoteTelegramAPI
from tests.fakes.telegram_api import BAD_GATEWAY, ApiError, FakeTelegramAPI

WEBHOOK_URL = "https://bot.example.invalid/telegram/webhook"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
JOB_NAMES = ("retry_notifications", "reconcile_inventory", "detect_stuck", "health_snapshot",
             "cleanup")  # fmt: skip

FAST_JOBS = {f"JOB_{name}_INTERVAL_S": "1" for name in ("RETRY", "RECONCILE", "STUCK", "HEALTH",
                                                        "CLEANUP")}  # fmt: skip
"""Every periodic job once a second (the defaults are minutes to a day)."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@dataclass
class WebhookInstance:
    """A ``python -m bot`` process in webhook mode, listening on ``port``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    secret: str
    session: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    async def post_update(self, update: dict[str, Any], secret: str | None = None) -> int:
        """POST one Update as Telegram does; returns the HTTP status."""
        headers = {SECRET_HEADER: self.secret if secret is None else secret}
        async with self.session.post(
            self.base_url + WEBHOOK_PATH, json=update, headers=headers
        ) as response:
            return response.status

    async def get(self, path: str) -> tuple[int, str]:
        """GET ``path``; (status, body)."""
        async with self.session.get(self.base_url + path) as response:
            return response.status, await response.text()

    async def metrics(self) -> Samples:
        """The instance's current metrics."""
        status, body = await self.get("/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def terminate(self) -> None:
        """SIGTERM: graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the instance dies on the spot."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    async def wait_exit(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """Wait for the process to end; its exit code. AssertionError on timeout."""
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{self.name} did not exit:\n{self.log()}") from exc


@dataclass
class Cluster:
    """Starts webhook instances on one database and stops whatever is left at the end."""

    database_url: str
    tmp_path: Path
    session: aiohttp.ClientSession
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    instances: list[WebhookInstance] = field(default_factory=list)

    async def start(
        self, name: str, api: FakeTelegramAPI | RemoteTelegramAPI, **extra: str
    ) -> WebhookInstance:
        """Start instance ``name`` against ``api``; returns once ``/readyz`` says ready and
        the webhook is set."""
        for _attempt in range(3):  # the free port may be taken in between: try another
            port = free_port()
            env = bot_env(self.database_url, api.base_url, self.tmp_path / "data",
                          WEBHOOK_URL=WEBHOOK_URL, WEBHOOK_PATH=WEBHOOK_PATH,
                          WEBHOOK_SECRET=self.secret, WEB_HOST="127.0.0.1", WEB_PORT=str(port),
                          INSTANCE_ID=name, **extra)  # fmt: skip
            log_path = self.tmp_path / f"bot-{name}-{len(self.instances)}.log"
            process = spawn_bot(env, log_path)
            instance = WebhookInstance(name, process, port, log_path, self.secret, self.session)
            self.instances.append(instance)
            if await self._ready(instance, api):
                return instance
            if "address already in use" not in instance.log():
                break
        raise AssertionError(f"{name} did not become ready:\n{instance.log()}")

    async def _ready(
        self, instance: WebhookInstance, api: FakeTelegramAPI | RemoteTelegramAPI
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120  # a busy machine imports slowly
        while loop.time() < deadline:
            if instance.process.poll() is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await instance.get("/readyz")
                if status == 200 and api.webhook is not None:
                    return True
            await asyncio.sleep(0.1)
        return False

    async def stop_all(self) -> None:
        """SIGTERM every instance still running, SIGKILL after 20 s."""
        for instance in self.instances:
            instance.terminate()
        for instance in self.instances:
            try:
                await asyncio.to_thread(instance.process.wait, 20)
            except subprocess.TimeoutExpired:
                instance.kill()

    def logs(self) -> str:
        """Every instance's log, for a failure report."""
        return "\n".join(f"--- {i.name} ({i.log_path.name}) ---\n{i.log()}" for i in self.instances)


class HoldingTelegramAPI(FakeTelegramAPI):
    """The Bot API fake whose ``sendMessage`` hangs for the chats in ``held_chats`` until
    the test lets them through (``release``) or fails them (``fail``: 502, not delivered,
    as when the request never reached Telegram)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_chats: set[int] = set()
        self.waiting: collections.Counter[int] = collections.Counter()
        self._gates: dict[int, asyncio.Event] = {}
        self._failed: set[int] = set()

    def _gate(self, chat_id: int) -> asyncio.Event:
        return self._gates.setdefault(chat_id, asyncio.Event())

    async def sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and chat_id in self.held_chats:
            self.waiting[chat_id] += 1
            try:
                await self._gate(chat_id).wait()
            finally:
                self.waiting[chat_id] -= 1
            if chat_id in self._failed:
                raise ApiError(**BAD_GATEWAY)
        return super().sendMessage(params)

    def release(self, chat_id: int) -> None:
        """Deliver the held and future messages to ``chat_id``."""
        self.held_chats.discard(chat_id)
        self._gate(chat_id).set()

    def fail(self, chat_id: int) -> None:
        """Answer the held messages to ``chat_id`` with 502 Bad Gateway."""
        self._failed.add(chat_id)
        self._gate(chat_id).set()


def texts_to(api: FakeTelegramAPI, chats: list[int]) -> collections.Counter[str]:
    """How many times the bot's messages with each text reached these chats."""
    return collections.Counter(m.get("text", "") for chat in chats for m in api.messages_to(chat))


async def eventually(
    predicate: Callable[[], Any], within_s: float = 30.0, what: str = "", interval_s: float = 0.1
) -> Any:
    """Poll a sync or async predicate every ``interval_s`` seconds until truthy;
    AssertionError after ``within_s`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {within_s}s: {what or predicate}")
        await asyncio.sleep(interval_s)
