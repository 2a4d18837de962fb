"""Optional extras of the install and what is off without them.

``pip install '.[embedded,charts,sentry,redis]'`` (or a subset) adds:

- ``embedded`` (pgserver): the embedded PostgreSQL used when ``DATABASE_URL`` is unset;
- ``charts`` (matplotlib): the error chart of the admin menu (statistics as text without);
- ``sentry`` (sentry-sdk): reporting critical errors to ``SENTRY_DSN``;
- ``redis`` (redis): FSM storage and Telegram's rate limits shared through ``REDIS_URL``.

A setting that asks for a feature whose extra is missing stops the bot with one line saying
what to install (``MissingExtraError``); a feature nobody asked for is reported off at
start-up (``describe``).
"""

from __future__ import annotations

import importlib.util

from bot.settings import Settings

EXTRA_MODULES = {
    "embedded": "pgserver",
    "charts": "matplotlib",
    "sentry": "sentry_sdk",
    "redis": "redis",
}
"""Extra name (``pyproject.toml``) -> the module it installs."""


class MissingExtraError(RuntimeError):
    """A setting needs an optional extra that is not installed; the message says which."""


def installed(extra: str) -> bool:
    """True when the extra's module can be found (without importing it)."""
    try:
        return importlib.util.find_spec(EXTRA_MODULES[extra]) is not None
    except ImportError:  # a finder that refuses the name, a broken install
        return False


def require(extra: str, because: str, alternative: str = "") -> None:
    """Raise ``MissingExtraError`` unless ``extra`` is installed.

    Args:
        extra: a key of ``EXTRA_MODULES``.
        because: what asked for it, e.g. ``"REDIS_URL is set"``.
        alternative: another way out, appended to the message.
    """
    if not installed(extra):
        raise MissingExtraError(
            f"{because}, but the {extra!r} extra ({EXTRA_MODULES[extra]}) is not installed: "
            f"pip install -c requirements.lock '.[{extra}]'{alternative}"
        )


def describe(settings: Settings) -> str:
    """One line for the start-up log: each optional feature, on or off and why."""
    parts = [
        "database: " + ("DATABASE_URL" if settings.database_url else "embedded PostgreSQL"),
        "charts: on"
        if installed("charts")
        else "charts: off (matplotlib not installed: error statistics as text)",
    ]
    if settings.sentry_dsn is not None and settings.sentry_dsn.get_secret_value().strip():
        parts.append("Sentry: on")
    else:
        parts.append("Sentry: off (SENTRY_DSN unset)")
    if settings.redis_url:
        parts.append("Redis: on (FSM storage and rate limits shared by every instance)")
    else:
        parts.append(
            "Redis: off (REDIS_URL unset: conversations in memory, rate limits in this process)"
        )
    return "; ".join(parts)


def check(settings: Settings) -> None:
    """Stop early when a setting asks for an extra that is missing.

    Raises:
        MissingExtraError: ``DATABASE_URL`` unset without ``embedded``, ``REDIS_URL`` set
            without ``redis``, ``SENTRY_DSN`` set without ``sentry``.
    """
    if not settings.database_url:
        require(
            "embedded",
            "DATABASE_URL is not set (the embedded PostgreSQL is the default)",
            ", or set DATABASE_URL=postgresql://user:password@host:5432/db",
        )
    if settings.redis_url:
        require("redis", "REDIS_URL is set")
    if settings.sentry_dsn is not None and settings.sentry_dsn.get_secret_value().strip():
        require("sentry", "SENTRY_DSN is set")
