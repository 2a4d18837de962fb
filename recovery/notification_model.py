"""What the notification sender works with and reports: the ``Sender`` and ``Renderer`` the
bot supplies, drain counts, failing notifications for the admin menu, and a notification
whose request has moved on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DrainResult:
    """Counts of one or more drain passes.

    claimed: rows claimed; sent: delivered; retried: backoff retry scheduled; rate_limited:
    put back after a 429; deferred: put back because a rate limit would hold them too long;
    dead: dead-lettered (max attempts or queue full); skipped: recipient unreachable;
    migrated: sent again to a supergroup; failed: outcome not recorded (the database failed;
    the row returns after its lease).
    """

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    rate_limited: int = 0
    deferred: int = 0
    dead: int = 0
    skipped: int = 0
    migrated: int = 0
    failed: int = 0

    def add(self, other: DrainResult) -> None:
        """Add ``other``'s counts to these."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True, slots=True)
class FailingNotification:
    """One dead or failing notification for the admin menu (``last_error`` is masked)."""

    id: int
    chat_id: int
    recipient_id: int | None
    template_key: str
    status: str
    attempts: int
    last_error: str | None
    dead_reason: str | None
    next_attempt_at: Any
    updated_at: Any
    request_id: int | None


@dataclass(frozen=True, slots=True)
class RequestMoved:
    """A notification names a request state the request has left since it was written.

    Attributes:
        request_id: the request.
        said_state: the state the notification names.
        state, status: the request's state and status now (both None: it is gone).
    """

    request_id: int
    said_state: str
    state: str | None
    status: str | None


Renderer = Callable[[str, dict[str, Any], str], str]
"""(template_key, params, locale) -> message text, rendered at send time."""


class Sender(Protocol):
    """Sends one text message; returns Telegram's message id. Raises the Bot API's errors.

    ``mute`` (only passed when the row has ``params["mute"]``): the alert's mute offer
    (``recovery.alerts.mute_offer``), which the Telegram layer turns into buttons in
    ``locale``.
    """

    def __call__(
        self,
        chat_id: int,
        text: str,
        *,
        mute: Mapping[str, Any] | None = None,
        locale: str | None = None,
    ) -> Awaitable[int | None]: ...
