"""Optional Sentry reporting of critical errors (``SENTRY_DSN``), masked like our own records.

Only errors the ``ErrorHandler`` grades critical are sent (``report_critical``, an error
observer), plus crashes of the process itself (sentry's excepthook integration). Log lines
become breadcrumbs, never events. Local variables are not collected at all. Every event and
every breadcrumb is cleaned twice:

1. by key name: Sentry's own ``EventScrubber`` with its default denylist extended by our
   keys (``DENYLIST``: the settings that hold secrets, personal data fields, the ru/uz
   words for a password), recursively, over the request, extra, user, breadcrumbs, frames
   and spans, plus the contexts and tags our events carry (``project_event_scrubber``);
2. by value: every remaining string goes through ``recovery.masking.mask_sensitive``
   (phones, cards, IBANs, e-mail addresses, tokens, the bot token, the webhook secret) in
   ``before_send`` / ``before_breadcrumb``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.features import require
from bot.settings import Settings
from recovery.errors import ErrorRecord, ErrorSeverity
from recovery.masking import mask_sensitive

if TYPE_CHECKING:  # sentry-sdk is the optional ``sentry`` extra: imported when used
    from sentry_sdk.scrubber import EventScrubber
    from sentry_sdk.transport import Transport
    from sentry_sdk.types import Event, Hint

log = logging.getLogger(__name__)


# Keys whose values are identifiers or code locations, not text: masking them would break
# the event (a 32-hex event_id looks like a secret) and they carry no user data.
STRUCTURAL_KEYS = frozenset({
    "event_id", "fingerprint", "timestamp", "start_timestamp", "trace_id", "span_id",
    "parent_span_id", "level", "platform", "sdk", "release", "environment", "server_name",
    "modules", "type", "module", "filename", "abs_path", "function", "lineno", "in_app",
})  # fmt: skip


# Key names whose values are removed whatever they hold, besides Sentry's DEFAULT_DENYLIST.
DENYLIST: tuple[str, ...] = (
    # our settings and their environment names
    "bot_token", "webhook_secret", "sentry_dsn", "database_url", "redis_url", "dsn",
    "access_token", "refresh_token", "client_secret", "secret_key", "x-api-key",
    "x-telegram-bot-api-secret-token", "x_telegram_bot_api_secret_token",
    # personal data
    "phone", "phone_number", "telephone", "card", "card_number", "pan", "cvv", "cvc", "pin",
    "iban", "email", "e-mail", "passport", "pinfl", "address", "first_name", "last_name",
    "full_name", "username",
    # the same in Russian and Uzbek
    "пароль", "токен", "телефон", "паспорт", "parol", "telefon", "pasport",
)  # fmt: skip


def project_event_scrubber() -> EventScrubber:
    """Sentry's ``EventScrubber`` with ``DEFAULT_DENYLIST`` + ``DENYLIST``, recursive, that
    also scrubs ``contexts`` and ``tags`` (where ``report_critical`` puts the error context;
    the stock scrubber does not look there). Needs the ``sentry`` extra."""
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    class ProjectEventScrubber(EventScrubber):
        def __init__(self) -> None:
            super().__init__(denylist=[*DEFAULT_DENYLIST, *DENYLIST], recursive=True)

        def scrub_event(self, event: Any) -> None:
            super().scrub_event(event)
            for key in ("contexts", "tags"):
                if key in event:
                    self.scrub_dict(event[key])

    return ProjectEventScrubber()


def mask_event(value: Any, secrets: Sequence[str] = ()) -> Any:
    """``value`` with every string inside it (dict values, list items) masked, except the
    values of ``STRUCTURAL_KEYS``."""
    if isinstance(value, str):
        return mask_sensitive(value, extra_secrets=tuple(secrets))
    if isinstance(value, dict):
        return {
            key: item if key in STRUCTURAL_KEYS else mask_event(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(mask_event(item, secrets) for item in value)
    return value


def _secrets(settings: Settings) -> tuple[str, ...]:
    values = (settings.bot_token, settings.webhook_secret, settings.sentry_dsn)
    return tuple(s.get_secret_value() for s in values if s and s.get_secret_value())


def init_sentry(settings: Settings, *, transport: Transport | None = None) -> bool:
    """Start the Sentry client when ``SENTRY_DSN`` is set; returns whether it started.

    ``transport`` replaces the HTTP transport (tests capture events with it).
    """
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value().strip():
        return False
    require("sentry", "SENTRY_DSN is set")
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    secrets = _secrets(settings)
    scrubber = project_event_scrubber()

    def before_send(event: Event, hint: Hint) -> Event:
        return mask_event(event, secrets)

    def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        scrubber.scrub_dict(crumb.get("data"))
        return mask_event(crumb, secrets)

    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value().strip(),
        environment=settings.sentry_environment,
        server_name=settings.instance_id or None,
        before_send=before_send,
        before_breadcrumb=before_breadcrumb,
        event_scrubber=scrubber,
        include_local_variables=False,
        auto_enabling_integrations=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
        traces_sample_rate=0.0,
        **options,
    )
    log.info("Sentry reporting of critical errors is on")
    return True


def report_critical(record: ErrorRecord, exc: BaseException) -> None:
    """Error observer: send a critical error to Sentry (a no-op when Sentry is off).

    The event is grouped by our fingerprint and tagged with category, severity and the
    error reference users see.
    """
    sentry_sdk = _started_sdk()
    if record.severity is not ErrorSeverity.CRITICAL or sentry_sdk is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = [record.fingerprint]
        scope.set_tag("category", record.category.value)
        scope.set_tag("severity", record.severity.value)
        if record.reference:
            scope.set_tag("reference", record.reference)
        scope.set_context("error", {"location": record.location, **record.context})
        sentry_sdk.capture_exception(exc)


def close_sentry(timeout_s: float = 2.0) -> None:
    """Flush pending events (up to ``timeout_s`` seconds) at shutdown."""
    sentry_sdk = _started_sdk()
    if sentry_sdk is not None:
        sentry_sdk.flush(timeout=timeout_s)


def _started_sdk() -> Any:
    """The ``sentry_sdk`` module when a client was started, else None (never imports it)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    return sentry_sdk if sentry_sdk is not None and sentry_sdk.is_initialized() else None
