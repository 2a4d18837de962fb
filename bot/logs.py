"""Logging of the bot process: text for a terminal or JSON lines for a log shipper
(``LOG_FORMAT``), with the context of the work bound to every line, masked.

Context comes from ``structlog.contextvars``: whoever starts a piece of work binds what
identifies it, and every line logged inside it (in the same task or in tasks it starts)
carries those fields:

- ``instance``: this process (``INSTANCE_ID``, else host:pid), on every line;
- ``update_id``, ``user_id``, ``update_type``: the Telegram update being handled
  (``bot.app.ContextDispatcher``, around aiogram's own handling, so its lines too);
- ``error_ref``: the error reference shown to the user, from the moment the error handler
  returned it (``middlewares.enhanced_error_handler``); the update id is unique per bot, so
  the reference's line leads to every line of that update on any instance;
- ``request_id``: the service request a state change works on (``recovery.transactions``);
- ``job``: the periodic job running (``bot.scheduler``).

A field bound to None (the update middleware clears what an earlier update may have set)
is left out of the line.

Every string of a line (message, exception, context values) goes through
``recovery.masking.mask_sensitive`` with the configured secrets, like the error records.
The code keeps logging through the standard library (``logging.getLogger(__name__)``).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

from bot.settings import Settings
from recovery.masked_output import MaskingFilter
from recovery.masking import mask_sensitive
from recovery.notifications import default_instance_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text line as before structured logging, with the bound context appended."""

_LEVEL_FIRST = ("timestamp", "level", "logger", "message")


class _Masker:
    """A structlog processor masking every string value of a line and leaving out the
    fields bound to None."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = secrets

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        for key, value in list(event.items()):
            if value is None:
                del event[key]
            elif isinstance(value, str) and key not in ("timestamp", "level", "logger"):
                event[key] = mask_sensitive(value, extra_secrets=self.secrets)
        return event


def _add_instance(instance: str) -> Processor:
    def add(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("instance", instance)
        return event

    return add


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` plus `` [key=value ...]`` of the bound context (masked)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = structlog.contextvars.get_contextvars()
        fields = " ".join(f"{key}={value}" for key, value in context.items() if value is not None)
        if not fields:
            return line
        suffix = f" [{mask_sensitive(fields, extra_secrets=self.secrets)}]"
        head, sep, rest = line.partition("\n")  # after the message, before a stack trace
        return head + suffix + sep + rest


def json_formatter(instance: str, secrets: tuple[str, ...] = ()) -> logging.Formatter:
    """One JSON object per line: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``instance``, the bound context and ``exception`` (a formatted stack
    trace) when there is one; every string masked."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            _add_instance(instance),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _Masker(secrets),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _ordered,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )


def _ordered(logger: Any, method: str, event: EventDict) -> EventDict:
    """timestamp, level, logger and message first: easier to read raw."""
    head = {key: event.pop(key) for key in _LEVEL_FIRST if key in event}
    return {**head, **event}


def configure_logging(settings: Settings) -> None:
    """Log to stderr in ``LOG_FORMAT`` at ``LOG_LEVEL``, with sensitive data (and the bot
    token, the webhook secret and the Sentry DSN) masked in every line."""
    secrets = tuple(
        s.get_secret_value()
        for s in (settings.bot_token, settings.webhook_secret, settings.sentry_dsn)
        if s and s.get_secret_value()
    )
    instance = settings.instance_id or default_instance_id()
    handler = logging.StreamHandler()
    handler.addFilter(MaskingFilter(extra_secrets=secrets))
    if settings.log_format == "json":
        handler.setFormatter(json_formatter(instance, secrets))
    else:
        handler.setFormatter(TextFormatter(secrets))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # one line per job firing is APScheduler's INFO; bot.scheduler logs each run's outcome
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # pgserver logs every pg_ctl command line and its output at INFO
    logging.getLogger("pgserver").setLevel(logging.WARNING)
