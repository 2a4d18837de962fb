"""Every label of the bot's own words, once: workflow states, roles and types, health
statuses and figures, alert kinds and mute buttons (msgids; translated where they are shown:
``handlers/texts.py`` in a screen's language, ``bot/notification_texts.py`` in a
recipient's). The core names states, figures and kinds; the words are made here.
"""

from __future__ import annotations


def _(text: str) -> str:
    """Mark a msgid for extraction; translated where it is shown."""
    return text


STATE_MSGIDS: dict[str, str] = {
    "new": _("new"),
    "assigned": _("assigned"),
    "review": _("review"),
    "in_work": _("in work"),
    "materials": _("materials"),
    "quality_check": _("quality check"),
    "completed": _("completed"),
}
"""Workflow states (``recovery.workflow_definitions``)."""

ROLE_MSGIDS: dict[str, str] = {
    "client": _("client"),
    "manager": _("manager"),
    "junior_manager": _("junior manager"),
    "controller": _("controller"),
    "technician": _("technician"),
    "warehouse": _("warehouse"),
    "admin": _("admin"),
}
"""Roles of users."""

WORKFLOW_MSGIDS: dict[str, str] = {"connection": _("connection"), "repair": _("repair")}
"""Workflow types."""

HEALTH_FIGURE_MSGIDS: dict[str, str] = {
    "active_requests": _("Active requests"),
    "stuck_requests": _("Stuck workflows"),
    "pending_notifications": _("Pending notifications"),
    "retrying_notifications": _("Retrying notifications"),
    "dead_notifications": _("Dead notifications"),
    "notification_backlog": _("Notification backlog"),
    "oldest_due_notification_s": _("Oldest due notification, seconds"),
    "errors_last_hour": _("Error groups in the last hour"),
    "errors_high_last_hour": _("High-severity errors in the last hour"),
    "errors_critical_last_hour": _("Critical errors in the last hour"),
    "open_discrepancies": _("Open inventory discrepancies"),
    "pool_usage": _("Database pool in use"),
    "job_failures_last_hour": _("Scheduler job failures in the last hour"),
    "rate_limits_local_only": _("Rate limits held by this instance alone (Redis unreachable)"),
}
"""msgids of every figure, in display order."""

HEALTH_STATUS_MSGIDS: dict[str, str] = {
    "healthy": _("healthy"),
    "degraded": _("degraded"),
    "critical": _("critical"),
}
"""The overall health status (``recovery.health.HealthStatus``)."""

KIND_LABELS: dict[str, str] = {
    "error": _("critical errors"),
    "health": _("health changes"),
    "stuck": _("stuck workflows"),
    "system": _("system alerts"),
}
"""msgids naming each alert kind (the mute confirmation, the alert settings screen)."""

MUTE_BUTTON_TEXTS: dict[int, str] = {
    3600: _("Mute for 1 hour"),
    24 * 3600: _("Mute for 24 hours"),
}
"""A mute button on an alert message, by duration in seconds (the message names the kind)."""

DIGEST_MUTE_TEXTS: dict[str, str] = {
    "error": _("Mute error alerts for 1 hour"),
    "health": _("Mute health alerts for 1 hour"),
    "stuck": _("Mute stuck-workflow alerts for 1 hour"),
    "system": _("Mute system alerts for 1 hour"),
}
"""A mute button on a digest of several kinds, by kind (one hour)."""

DEAD_REASON_MSGIDS: dict[str, str] = {
    "max attempts": _("it failed on every attempt"),
    "max attempts: telegram unreachable": _(
        "Telegram did not answer on any attempt; it is sent again when Telegram is back"
    ),
    "queue full": _("the retry queue was full"),
    "recipient unreachable": _("the recipient cannot be reached"),
    "bot_blocked": _("the recipient blocked the bot"),
    "user_deactivated": _("the recipient's account is deleted"),
    "bot_kicked": _("the bot was removed from the chat"),
    "cannot_initiate": _("the recipient never started the bot"),
    "bot_not_member": _("the bot is not a member of the chat"),
    "chat_not_found": _("the chat does not exist"),
    "no_rights": _("the bot may not write there"),
}
"""Why a notification stopped (``pending_notifications.dead_reason``: the sender's reasons in
``recovery.notification_outcomes`` and the Telegram reasons of ``recovery.classification``);
an unknown one is shown as it is stored."""
