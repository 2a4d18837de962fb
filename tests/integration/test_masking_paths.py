"""The masking corpus through a real failing path: a user's message reaches a handler of the
real dispatcher (every middleware), PostgreSQL raises an error that quotes the text (SQLSTATE
42P01, system/critical), and the error pipeline writes it to ``error_records``, the log
(through the bot's own logging set-up) and a Sentry event (captured by a transport), and
queues the admin alert. Nothing sensitive may reach any of them; every look-alike must
arrive unchanged."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import sentry_sdk
from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from bot.logs import configure_logging
from bot.sentry import close_sentry, init_sentry
from bot.settings import Settings
from tests.botstack import make_stack
from tests.fakes.telegram_api import DEFAULT_TOKEN
from tests.masking_corpus import LOOKALIKES, SENSITIVE, leaks

ADMIN = 555_000_001
USER = 901_000_001
REFERENCE = re.compile(r"E-[A-Z2-9]{6}")
DSN = "https://public-key@sentry.example.invalid/42"

# PostgreSQL raises the text it is given, as undefined_table (42P01: system, critical)
FAIL_FUNCTION = """
CREATE FUNCTION corpus_fail(msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '42P01', MESSAGE = msg, DETAIL = 'value: ' || msg;
END $$
"""


class CapturingTransport(Transport):
    """Keeps the events Sentry would send."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                self.events.append(item.payload.json)


@pytest.fixture
def transport() -> Iterator[CapturingTransport]:
    capture = CapturingTransport()
    settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, sentry_dsn=SecretStr(DSN))
    assert init_sentry(settings, transport=capture)
    try:
        yield capture
    finally:
        close_sentry()
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The bot's own logging set-up (the masking filter on the handler), into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(Settings(_env_file=None, bot_token=DEFAULT_TOKEN))
    stream = io.StringIO()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _router() -> Router:
    router = Router(name="corpus")

    @router.message(Command("corpus"))
    async def corpus(message: Message, command: CommandObject, pool: asyncpg.Pool) -> None:
        await pool.execute("SELECT corpus_fail($1)", command.args)

    return router


def _tag(index: int) -> str:
    """A letters-only tag per item, so that no two items share an error group."""
    return "".join("abcdefghij"[int(d)] for d in f"{index:04d}")


async def test_the_corpus_never_leaks_into_records_log_sentry_or_alerts(
    pool: asyncpg.Pool, transport: CapturingTransport, log_stream: io.StringIO
) -> None:
    await pool.execute(FAIL_FUNCTION)
    stack = make_stack(pool, admin_ids=[ADMIN], extra_routers=[_router()])
    cases: list[tuple[str, tuple[str, ...], bool]] = [
        (item.text, item.secrets, True) for item in SENSITIVE
    ] + [(text, (), False) for text in LOOKALIKES]
    failures: list[str] = []
    for index, (text, secrets, sensitive) in enumerate(cases):
        start = log_stream.tell()
        body = f"case {_tag(index)}: {text}"
        await stack.feed(stack.message(USER, f"/corpus {body}"))
        replies = stack.session.texts_to(USER)
        match = REFERENCE.search(replies[-1]) if replies else None
        assert match, f"no error reference for {text!r}: {replies[-1:]}"
        row = await pool.fetchrow("SELECT * FROM error_records WHERE reference = $1", match.group())
        assert row is not None and row["severity"] == "critical"
        log_text = log_stream.getvalue()[start:]
        stored = {
            "error_records.message": row["message"],
            "error_records.stack_trace": row["stack_trace"],
            "error_records.context": json.dumps(row["context"], ensure_ascii=False),
            "log": log_text,
        }
        if sensitive:
            failures += [
                f"{where} leaks {secret!r} of {text!r}"
                for where, value in stored.items()
                for secret in secrets
                if leaks(value, secret)
            ]
        else:
            failures += [
                f"{where} changed the look-alike {text!r}"
                for where in ("error_records.message", "log")
                if body not in stored[where]
            ]
    close_sentry()

    by_reference = {
        event["tags"]["reference"]: event for event in transport.events if "tags" in event
    }
    assert len(by_reference) == len(cases)
    references = {
        row["message"]: row["reference"]
        for row in await pool.fetch("SELECT message, reference FROM error_records")
    }
    for index, (text, secrets, sensitive) in enumerate(cases):
        body = f"case {_tag(index)}: {text}"
        reference = next(ref for message, ref in references.items() if f"{_tag(index)}:" in message)
        event = by_reference[reference]
        value = event["exception"]["values"][0]["value"]
        dump = json.dumps(event, ensure_ascii=False)
        if sensitive:
            failures += [f"sentry leaks {s!r} of {text!r}" for s in secrets if leaks(dump, s)]
        elif body not in value:
            failures.append(f"sentry changed the look-alike {text!r}: {value!r}")

    alerts = await pool.fetch(
        "SELECT params FROM pending_notifications WHERE template_key = 'admin.error_alert'"
    )
    assert alerts, "the critical errors alerted the admins"
    alert_dump = "\n".join(json.dumps(row["params"], ensure_ascii=False) for row in alerts)
    for item in SENSITIVE:
        failures += [f"admin alert leaks {s!r}" for s in item.secrets if s in alert_dump]
    assert not failures, "\n".join(failures)
