"""``NotificationRetryManager``: delivers the transactional outbox (``pending_notifications``).

Delivery is at least once: a row is claimed with a lease (``FOR UPDATE SKIP LOCKED``), sent,
then marked sent; a sender that dies between the send and the mark leaves a row that is
claimed again after its lease and may be delivered twice.

Retry policy (design: Policies / Retries): exponential backoff with full jitter,
``delay = uniform(0, min(max_delay_s, base_delay_s * 2**attempt))``, up to ``max_attempts``;
then the row is dead (a dead letter, kept and visible to admins). Telegram 429 waits exactly
``retry_after`` seconds without spending an attempt.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from database import notifications as sql
from database import users
from recovery.classification import RetryStrategy, classify
from recovery.masking import mask_sensitive

log = logging.getLogger(__name__)

Renderer = Callable[[str, dict[str, Any], str], str]
"""(template_key, params, locale) -> message text, rendered at send time."""


class Sender(Protocol):
    """Sends one text message; returns Telegram's message id. Raises the Bot API's errors.

    ``buttons`` (only passed when the row has ``params["buttons"]``): rows of
    ``{"text": msgid, "callback_data": str}`` to send as an inline keyboard, the texts
    translated into ``locale``.
    """

    def __call__(
        self,
        chat_id: int,
        text: str,
        *,
        buttons: list[list[dict[str, str]]] | None = None,
        locale: str | None = None,
    ) -> Awaitable[int | None]: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter.

    Raises:
        ValueError: on construction, when ``max_delay_s < base_delay_s`` or attempts < 1.
    """

    max_attempts: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``attempt`` (0-based): ``uniform(0, cap)`` where
        ``cap = min(max_delay_s, base_delay_s * 2**attempt)``."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 62)))
        return (rng or random).uniform(0, cap)


@dataclass(slots=True)
class DrainResult:
    """Counts of one drain pass."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0


def default_instance_id() -> str:
    """``host:pid``: who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class NotificationRetryManager:
    """Claims due outbox rows, renders them in the recipient's language and sends them.

    Args:
        pool: asyncpg pool.
        sender: delivers one message (the bot supplies one built on aiogram).
        renderer: renders a template key with its parameters in a locale.
        policy: retry policy.
        lease_s: seconds a claim is held before another sender may take the row.
        batch_size: rows claimed at once.
        instance_id: this sender's name in ``claimed_by``.
        default_locale: language for recipients without a stored one.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        sender: Sender,
        renderer: Renderer,
        policy: RetryPolicy | None = None,
        lease_s: float = 60.0,
        batch_size: int = 50,
        instance_id: str | None = None,
        default_locale: str = "en",
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.renderer = renderer
        self.policy = policy or RetryPolicy()
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.instance_id = instance_id or default_instance_id()
        self.default_locale = default_locale

    async def drain_once(self) -> DrainResult:
        """Claim one batch of due rows and deliver each; returns the counts."""
        result = DrainResult()
        rows = await sql.claim(self.pool, self.instance_id, self.batch_size, self.lease_s)
        result.claimed = len(rows)
        for row in rows:
            await self._deliver(row, result)
        return result

    async def _deliver(self, row: asyncpg.Record, result: DrainResult) -> None:
        if row["recipient_blocked"]:
            await sql.mark_final(self.pool, row["id"], self.instance_id, status="skipped",
                                 error=None, reason="recipient unreachable")  # fmt: skip
            result.skipped += 1
            return
        locale = row["recipient_language"] or self.default_locale
        params = row["params"] or {}
        try:
            text = self.renderer(row["template_key"], params, locale)
            if params.get("buttons"):  # inline buttons (admin alerts' mute), msgid texts
                message_id = await self.sender(
                    row["chat_id"], text, buttons=params["buttons"], locale=locale
                )
            else:
                message_id = await self.sender(row["chat_id"], text)
        except Exception as exc:
            await self._failed(row, exc, result)
            return
        await sql.mark_sent(self.pool, row["id"], self.instance_id, message_id)
        result.sent += 1

    async def _failed(self, row: asyncpg.Record, exc: Exception, result: DrainResult) -> None:
        verdict = classify(exc)
        error = mask_sensitive(f"{type(exc).__name__}: {exc}")[:500]
        if verdict.permanent:
            if verdict.mark_user_blocked:
                await users.mark_unreachable(self.pool, row["chat_id"])
            await sql.mark_final(self.pool, row["id"], self.instance_id, status="skipped",
                                 error=error, reason=verdict.reason)  # fmt: skip
            result.skipped += 1
            return
        if verdict.strategy is RetryStrategy.WAIT and verdict.retry_after is not None:
            await sql.mark_retry(self.pool, row["id"], self.instance_id,
                                 delay_s=verdict.retry_after, spend_attempt=False,
                                 error=error)  # fmt: skip
            result.retried += 1
            return
        attempt = row["attempts"] + 1
        if attempt >= self.policy.max_attempts:
            await sql.mark_final(self.pool, row["id"], self.instance_id, status="dead",
                                 error=error, reason="max attempts")  # fmt: skip
            result.dead += 1
            return
        await sql.mark_retry(self.pool, row["id"], self.instance_id,
                             delay_s=self.policy.delay_s(row["attempts"]), spend_attempt=True,
                             error=error)  # fmt: skip
        result.retried += 1
