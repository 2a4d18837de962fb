"""Settings read from the environment or a ``.env`` file (pydantic-settings).

Every policy number of the design lives here with its default, so that a newcomer can run
the bot with only ``BOT_TOKEN`` set. Durations are in seconds unless the name says days.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Locale = Literal["en", "ru", "uz"]
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
InventoryKind = Literal[
    "drift", "negative_balance", "negative_ledger", "orphaned_transaction", "duplicate_reference"
]


class MissingSettingError(RuntimeError):
    """A setting required for the requested command is not set; the message says which."""


class Settings(BaseSettings):
    """All runtime settings. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- Telegram -------------------------------------------------------------------------
    bot_token: SecretStr | None = None
    telegram_api_url: str | None = Field(
        default=None, description="Base URL of a local Bot API server or emulator."
    )
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    default_locale: Locale = "en"

    # --- Storage --------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="Unset: an embedded PostgreSQL is started under DATA_DIR."
    )
    data_dir: Path = Path("data")
    db_pool_min_size: int = Field(default=1, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_command_timeout_s: float = Field(default=30.0, gt=0)
    redis_url: str | None = Field(
        default=None,
        description="FSM storage and Telegram's rate limits shared by several instances; "
        "memory and this process if unset.",
    )
    redis_key_prefix: str = Field(
        default="fsm", min_length=1, description="Start of every key the bot writes in Redis."
    )
    redis_timeout_s: float = Field(
        default=1.0, gt=0, description="Seconds a rate-limit call to Redis may take."
    )

    # --- Webhook (polling when webhook_url is unset) --------------------------------------
    webhook_url: str | None = Field(
        default=None, description="Public HTTPS URL Telegram posts updates to."
    )
    webhook_path: str = Field(default="/telegram/webhook", pattern=r"^/")
    webhook_secret: SecretStr | None = None
    # Telegram accepts 1..100 simultaneous webhook connections (setWebhook, default 40)
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    webhook_set_on_start: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)
    http_in_polling: bool = Field(
        default=False, description="Serve /metrics, /healthz, /readyz in polling mode too."
    )

    # --- Operations -----------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for a terminal, json (one object a line) for shippers."
    )
    instance_id: str | None = Field(
        default=None, description="Name of this process in leases and logs; host:pid if unset."
    )
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    readiness_timeout_s: float = Field(default=2.0, gt=0)
    sentry_dsn: SecretStr | None = None
    sentry_environment: str = "production"
    job_run_retention_days: int = Field(default=30, ge=1)
    instance_heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often an instance says it is alive (bot_instances)."
    )
    processed_update_retention_days: int = Field(default=2, ge=1)

    # --- Supervised background work and outages (docs/outages.md) -------------------------
    background_restart_base_s: float = Field(
        default=1.0, gt=0, description="First delay before a crashed background task restarts."
    )
    background_restart_max_s: float = Field(
        default=30.0, gt=0, description="Cap of the doubling restart delay (jitter included)."
    )
    outage_probe_interval_s: float = Field(
        default=1.0, gt=0, description="How often PostgreSQL is probed (outage start and end)."
    )
    outage_alert_database_s: float = Field(
        default=60.0, ge=0, description="A database outage at least this long alerts admins."
    )
    outage_alert_telegram_s: float = Field(
        default=60.0, ge=0, description="A Bot API outage at least this long alerts admins."
    )

    # --- Notification retries (design: Policies / Retries) --------------------------------
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_base_delay_s: float = Field(default=30.0, gt=0)
    retry_max_delay_s: float = Field(default=3600.0, gt=0)
    retry_queue_max_size: int = Field(default=10_000, ge=1)
    notification_lease_s: float = Field(default=60.0, gt=0)
    notification_batch_size: int = Field(default=50, ge=1)
    notification_poll_interval_s: float = Field(default=2.0, gt=0)
    notification_retention_days: int = Field(default=14, ge=1)
    notification_concurrency: int = Field(default=8, ge=1)
    notification_send_timeout_s: float = Field(default=15.0, gt=0)
    # Telegram limits: https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this
    rate_limit_enabled: bool = True
    rate_global_per_s: float = Field(default=30.0, gt=0)
    rate_per_chat_per_s: float = Field(default=1.0, gt=0)
    rate_per_group_per_min: float = Field(default=20.0, gt=0)
    # added to every window's length: a send granted at the end of a window may reach
    # Telegram later than one granted before it (network and scheduling jitter)
    rate_window_margin_s: float = Field(default=0.05, ge=0, le=1)

    # --- Errors and alerts ----------------------------------------------------------------
    error_alert_window_s: float = Field(default=3600.0, ge=0)
    # the error pipeline (docs/errors.md): occurrences coalesced for this long, then written
    # in one statement; while PostgreSQL is away at most this many groups are held (past
    # it the oldest group is dropped and counted); a failed write is retried with capped
    # exponential backoff
    error_flush_window_s: float = Field(default=0.1, gt=0, le=10)
    error_spool_max_groups: int = Field(default=10_000, ge=1)
    error_flush_backoff_max_s: float = Field(default=5.0, gt=0)
    error_retention_days: int = Field(default=90, ge=1)
    transaction_log_retention_days: int = Field(default=30, ge=1)
    health_snapshot_retention_days: int = Field(default=30, ge=1)
    db_retry_attempts: int = Field(default=3, ge=1)
    db_retry_base_delay_s: float = Field(default=0.05, gt=0)
    db_retry_max_delay_s: float = Field(default=1.0, gt=0)

    # --- Users ----------------------------------------------------------------------------
    # the rows of client senders are kept in memory (recovery/user_cache.py), dropped on
    # PostgreSQL's NOTIFY of a change and after this many seconds at most; 0 reads the
    # users row from PostgreSQL on every update
    user_cache_ttl_s: float = Field(default=60.0, ge=0)

    # --- Stuck workflows ------------------------------------------------------------------
    stuck_default_threshold_s: float = Field(default=24 * 3600.0, gt=0)
    stuck_thresholds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description='Per "workflow_type:state" thresholds in seconds, '
        'e.g. {"connection:review": 3600}.',
    )

    # --- Inventory ------------------------------------------------------------------------
    inventory_orphan_grace_s: float = Field(default=24 * 3600.0, ge=0)
    # kinds the hourly reconciliation fixes by itself; the others wait for an admin
    inventory_auto_fix_kinds: Annotated[list[InventoryKind], NoDecode] = Field(
        default_factory=lambda: cast(
            list[InventoryKind], ["drift", "negative_balance", "orphaned_transaction"]
        ),
        description="Comma-separated: drift, negative_balance, negative_ledger, "
        "orphaned_transaction, duplicate_reference (empty: report only).",
    )

    # --- Health and admin alerts ----------------------------------------------------------
    health_thresholds: Annotated[dict[str, list[float | None]], NoDecode] = Field(
        default_factory=dict,
        description="Overrides of recovery.health.DEFAULT_THRESHOLDS as JSON, "
        '{"figure": [degraded_at, critical_at]}, e.g. {"dead_notifications": [1, 50]}; '
        "null disables a level.",
    )
    alert_dedupe_window_s: float = Field(default=1800.0, ge=0)
    alert_rate_limit: int = Field(default=5, ge=1)
    alert_rate_window_s: float = Field(default=300.0, gt=0)
    job_alert_digest_interval_s: float = Field(default=60.0, gt=0)

    # --- Periodic jobs (design: Policies / Periodic jobs) ---------------------------------
    scheduler_enabled: bool = True
    job_retry_interval_s: float = Field(default=60.0, gt=0)
    job_reconcile_interval_s: float = Field(default=3600.0, gt=0)
    job_stuck_interval_s: float = Field(default=1800.0, gt=0)
    job_health_interval_s: float = Field(default=300.0, gt=0)
    job_cleanup_interval_s: float = Field(default=86400.0, gt=0)

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: Any) -> Any:
        """Accept ``"1,2,3"``, ``"[1, 2]"``, a single int or a list."""
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("inventory_auto_fix_kinds", mode="before")
    @classmethod
    def _parse_kinds(cls, value: Any) -> Any:
        """Accept ``"drift,orphaned_transaction"`` or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("stuck_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("health_thresholds", mode="before")
    @classmethod
    def _parse_health_thresholds(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("health_thresholds")
    @classmethod
    def _check_health_thresholds(
        cls, value: dict[str, list[float | None]]
    ) -> dict[str, list[float | None]]:
        for name, pair in value.items():
            if len(pair) != 2:
                raise ValueError(f"HEALTH_THRESHOLDS[{name}] must be [degraded_at, critical_at]")
            degraded, critical = pair
            if degraded is not None and critical is not None and critical < degraded:
                raise ValueError(f"HEALTH_THRESHOLDS[{name}]: critical_at is below degraded_at")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.retry_max_delay_s < self.retry_base_delay_s:
            raise ValueError("RETRY_MAX_DELAY_S must not be below RETRY_BASE_DELAY_S")
        if self.db_pool_max_size < self.db_pool_min_size:
            raise ValueError("DB_POOL_MAX_SIZE must not be below DB_POOL_MIN_SIZE")
        if self.webhook_url:
            if not self.webhook_url.startswith("https://"):
                raise ValueError("WEBHOOK_URL must be an https:// URL (Telegram's requirement)")
            secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
            # setWebhook secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -
            if not _WEBHOOK_SECRET.fullmatch(secret):
                raise ValueError(
                    "WEBHOOK_SECRET must be set in webhook mode: 1-256 characters of "
                    "A-Z, a-z, 0-9, _ and - (Telegram's secret_token)"
                )
        return self

    @property
    def webhook_mode(self) -> bool:
        """True when updates arrive by webhook (``WEBHOOK_URL`` set), False for polling."""
        return bool(self.webhook_url)

    def require_bot_token(self) -> str:
        """Return the bot token.

        Raises:
            MissingSettingError: ``BOT_TOKEN`` is unset or empty, or not shaped as a token
                (``<bot id digits>:<secret>`` without blanks, aiogram's
                ``validate_token``); the message never contains the value.
        """
        if self.bot_token is None or not self.bot_token.get_secret_value().strip():
            raise MissingSettingError(
                "BOT_TOKEN is not set: put BOT_TOKEN=<token from @BotFather> in the "
                "environment or in .env"
            )
        token = self.bot_token.get_secret_value().strip()
        from aiogram.utils.token import TokenValidationError, validate_token

        try:
            validate_token(token)
        except TokenValidationError:
            raise MissingSettingError(
                "BOT_TOKEN is malformed: a token from @BotFather looks like "
                "123456789:AA... (digits, a colon, then the secret, no spaces)"
            ) from None
        return token

    def is_admin_id(self, telegram_id: int) -> bool:
        """True when ``telegram_id`` is listed in ``ADMIN_IDS``."""
        return telegram_id in self.admin_ids


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process (not at import time)."""
    return Settings()
