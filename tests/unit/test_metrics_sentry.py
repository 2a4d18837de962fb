"""Sentry reporting: off without a DSN; with one, critical errors only, masked like our own
error records. Events are captured by a transport instead of going over the network."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import sentry_sdk
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from bot.error_observers import ObservedErrorHandler
from bot.sentry import close_sentry, init_sentry, mask_event, report_critical
from bot.settings import Settings
from tests.fakes.telegram_api import DEFAULT_TOKEN

PHONE = "+998 90 123 45 67"
DSN = "https://public-key@sentry.example.invalid/42"


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
    """Sentry initialised with a capturing transport; switched off afterwards."""
    capture = CapturingTransport()
    settings = Settings(
        _env_file=None, bot_token=DEFAULT_TOKEN, sentry_dsn=SecretStr(DSN), instance_id="t"
    )
    assert init_sentry(settings, transport=capture) is True
    try:
        yield capture
    finally:
        close_sentry()
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def test_off_without_a_dsn() -> None:
    assert init_sentry(Settings(_env_file=None, sentry_dsn=None)) is False
    assert not sentry_sdk.is_initialized()


async def test_a_critical_error_is_reported_masked(
    transport: CapturingTransport, pool: asyncpg.Pool
) -> None:
    handler = ObservedErrorHandler(
        pool, extra_secrets=(DEFAULT_TOKEN,), observers=[report_critical]
    )
    # SQLSTATE 53300 too_many_connections: system, critical (design: Policies)
    exc = asyncpg.exceptions.TooManyConnectionsError(
        f"too many connections; caller phone {PHONE} token {DEFAULT_TOKEN}"
    )
    record = await handler.handle(exc, context={"note": f"call {PHONE}"})
    assert record.severity.value == "critical"
    close_sentry()

    assert len(transport.events) == 1
    event = transport.events[0]
    text = json.dumps(event)
    assert "123 45 67" not in text
    assert DEFAULT_TOKEN not in text
    assert DEFAULT_TOKEN.split(":")[1] not in text
    assert event["tags"]["category"] == "system"
    assert event["tags"]["severity"] == "critical"
    assert event["tags"]["reference"] == record.reference
    assert event["fingerprint"] == [record.fingerprint]
    assert event["exception"]["values"][0]["type"] == "TooManyConnectionsError"
    assert "too many connections" in event["exception"]["values"][0]["value"]


async def test_errors_below_critical_and_log_lines_are_not_sent(
    transport: CapturingTransport, pool: asyncpg.Pool
) -> None:
    handler = ObservedErrorHandler(pool, observers=[report_critical])
    record = await handler.handle(RuntimeError("something broke"))  # system, high
    assert record.severity.value == "high"
    logging.getLogger("bot.test").error("an error line %s", PHONE)
    close_sentry()
    assert transport.events == []


def test_mask_event_masks_every_string_inside() -> None:
    event = {
        "event_id": "25f4887e2d067c03da67acc53673429a",
        "message": f"call {PHONE}",
        "extra": {"nested": [f"token {DEFAULT_TOKEN}", 3, None]},
        "level": "error",
    }
    masked = mask_event(event, (DEFAULT_TOKEN,))
    assert "123 45 67" not in json.dumps(masked)
    assert DEFAULT_TOKEN not in json.dumps(masked)
    assert masked["extra"]["nested"][1:] == [3, None]
    assert masked["level"] == "error"
    assert masked["event_id"] == event["event_id"]


def test_denylisted_keys_are_removed_wherever_they_are(transport: CapturingTransport) -> None:
    """Sentry's EventScrubber with our denylist: values under sensitive key names go,
    whatever they look like, in extra, contexts, tags and breadcrumbs; other values are
    masked by pattern."""
    sentry_sdk.add_breadcrumb(message="login", data={"parol": "plain words", "step": 2})
    with sentry_sdk.new_scope() as scope:
        scope.set_context("error", {"pinfl": "looks harmless", "chat_id": 42})
        scope.set_extra("payload", {"password": "no pattern here", "note": f"call {PHONE}"})
        scope.set_tag("email", "not-an-address")
        sentry_sdk.capture_message("scrub me")
    close_sentry()
    (event,) = transport.events
    text = json.dumps(event, ensure_ascii=False)
    for value in ("no pattern here", "looks harmless", "not-an-address", "plain words", "123 45"):
        assert value not in text
    assert event["contexts"]["error"]["chat_id"] == 42
    assert event["extra"]["payload"]["note"] == "call ***67"
    assert event["breadcrumbs"]["values"][-1]["data"]["step"] == 2
