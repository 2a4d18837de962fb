"""Optional Sentry reporting of critical errors (``SENTRY_DSN``), masked like our own records.

Only errors the ``ErrorHandler`` grades critical are sent (``report_critical``, an error
observer), plus crashes of the process itself (sentry's excepthook integration). Log lines
become breadcrumbs, never events. Every string of an event and of a breadcrumb goes through
``recovery.masking.mask_sensitive`` (phone numbers, tokens, card numbers, the bot token and
the webhook secret) in ``before_send``; local variables are not collected at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.features import installed, require
from bot.settings import Settings
from recovery.errors import ErrorRecord, ErrorSeverity
from recovery.masking import mask_sensitive

if TYPE_CHECKING:
    from sentry_sdk.transport import Transport

log = logging.getLogger(__name__)


# Keys whose values are identifiers or code locations, not text: masking them would break
# the event (a 32-hex event_id looks like a secret) and they carry no user data.
STRUCTURAL_KEYS = frozenset({
    "event_id", "fingerprint", "timestamp", "start_timestamp", "trace_id", "span_id",
    "parent_span_id", "level", "platform", "sdk", "release", "environment", "server_name",
    "modules", "type", "module", "filename", "abs_path", "function", "lineno", "in_app",
})  # fmt: skip


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

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        return mask_event(event, secrets)

    def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
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
    if record.severity is not ErrorSeverity.CRITICAL or not installed("sentry"):
        return
    import sentry_sdk

    if not sentry_sdk.is_initialized():
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
    if not installed("sentry"):
        return
    import sentry_sdk

    if sentry_sdk.is_initialized():
        sentry_sdk.flush(timeout=timeout_s)
