"""The localized text a user sees when their update failed.

Chosen, first match wins, by: what the handler did about it (a reply queued for resending),
the classification's reason (``concurrent_modification``, ``flood_wait``...), the category
and severity together (a critical system error, a database that is restarting), and the
category alone. Never contains exception text; ends with the error reference when the error
was recorded.
"""

from __future__ import annotations

from aiogram.utils.i18n import I18n

from handlers.render import plain
from recovery.classification import Classification, ErrorCategory, ErrorSeverity


def _(text: str) -> str:
    """Mark a msgid for extraction; translated later with the user's locale."""
    return text


QUEUED_RESEND = _("We could not deliver a message. We will retry.")

BY_REASON: dict[str, str] = {
    "concurrent_modification": _(
        "This request was changed by someone else a moment ago. Open it again and retry."
    ),
    "invalid_transition": _("This action is not possible in the request's current state."),
    # the one refusal of a request a user may not act on, whether it exists, moved on or
    # was never theirs: it says nothing about the request (no oracle)
    "permission_denied": _(
        "This is not waiting for you: it is not yours to act on, or it has moved on. "
        "Send /tasks to see what is."
    ),
    "not_found": _("This does not exist (any more). Check the number, or send /help."),
    "validation": _("That input cannot be accepted. Please check it and try again."),
    "insufficient_stock": _("There is not enough of this material in stock."),
    "flood_wait": _("Too many requests right now. Please try again in {seconds} seconds."),
}

BY_CATEGORY_SEVERITY: dict[tuple[ErrorCategory, ErrorSeverity], str] = {
    (ErrorCategory.TRANSIENT, ErrorSeverity.HIGH): _(
        "The service is restarting. Please try again in a few minutes."
    ),
    (ErrorCategory.SYSTEM, ErrorSeverity.CRITICAL): _(
        "Something went wrong on our side. The team has been notified."
    ),
}

BY_CATEGORY: dict[ErrorCategory, str] = {
    ErrorCategory.TRANSIENT: _(
        "The service is temporarily unavailable. Please try again in a minute."
    ),
    ErrorCategory.DATA: _("That input cannot be accepted. Please check it and try again."),
    ErrorCategory.BUSINESS_LOGIC: _("This action cannot be done right now."),
    ErrorCategory.INVENTORY: _("There is a problem with the warehouse stock for this action."),
    ErrorCategory.NOTIFICATION: _("We could not deliver our reply. Please send the command again."),
    ErrorCategory.SYSTEM: _("Something went wrong on our side. Please try again later."),
}

REFERENCE = _("Error reference: {reference}")

CALLBACK_ALERT_LIMIT = 200
"""Characters an ``answerCallbackQuery`` text may have (Bot API: 0-200 characters)."""


def message_id_for(verdict: Classification, *, queued_resend: bool = False) -> str:
    """The msgid of the reply for a failure with this classification."""
    if queued_resend:
        return QUEUED_RESEND
    return (
        BY_REASON.get(verdict.reason)
        or BY_CATEGORY_SEVERITY.get((verdict.category, verdict.severity))
        or BY_CATEGORY[verdict.category]
    )


def user_message(
    i18n: I18n,
    verdict: Classification,
    *,
    reference: str | None,
    locale: str,
    queued_resend: bool = False,
    limit: int | None = None,
) -> str:
    """The reply for a failed update in ``locale``: the chosen text, then the error
    reference on its own line when the error was recorded.

    ``limit`` (characters) shortens the text, never the reference, e.g. to
    ``CALLBACK_ALERT_LIMIT`` for a callback query's alert.
    """
    text = i18n.gettext(message_id_for(verdict, queued_resend=queued_resend), locale=locale)
    if "{seconds}" in text:
        text = plain(text, seconds=max(1, round(verdict.retry_after or 0)))
    tail = ""
    if reference:
        tail = "\n" + plain(i18n.gettext(REFERENCE, locale=locale), reference=reference)
    if limit is not None and len(text) + len(tail) > limit:
        text = text[: max(0, limit - len(tail) - 1)].rstrip() + "…"
    return text + tail
