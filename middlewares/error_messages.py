"""The localized text a user sees when their update failed, by category and reason."""

from __future__ import annotations

from aiogram.utils.i18n import I18n

from recovery.classification import Classification, ErrorCategory


def _(text: str) -> str:
    """Mark a msgid for extraction; translated later with the user's locale."""
    return text


BY_REASON: dict[str, str] = {
    "concurrent_modification": _(
        "This request was changed by someone else a moment ago. Open it again and retry."
    ),
    "invalid_transition": _("This action is not possible in the request's current state."),
    "permission_denied": _("You do not have permission for this action."),
    "not_found": _("It no longer exists. Open the menu again."),
    "validation": _("That input cannot be accepted. Please check it and try again."),
    "insufficient_stock": _("There is not enough of this material in stock."),
}

BY_CATEGORY: dict[ErrorCategory, str] = {
    ErrorCategory.TRANSIENT: _(
        "The service is temporarily unavailable. Please try again in a minute."
    ),
    ErrorCategory.DATA: _("That input cannot be accepted. Please check it and try again."),
    ErrorCategory.BUSINESS_LOGIC: _("This action cannot be done right now."),
    ErrorCategory.INVENTORY: _("There is a problem with the warehouse stock for this action."),
    ErrorCategory.NOTIFICATION: _("We could not deliver a message. We will retry."),
    ErrorCategory.SYSTEM: _("Something went wrong on our side. The team has been notified."),
}

REFERENCE = _("Error reference: {reference}")


def user_message(
    i18n: I18n,
    exc: BaseException,
    verdict: Classification,
    reference: str | None,
    locale: str,
) -> str:
    """The reply for a failed update: the reason's text (or the category's), then the error
    reference when the error was recorded. Never contains exception text."""
    msgid = BY_REASON.get(verdict.reason) or BY_CATEGORY[verdict.category]
    text = i18n.gettext(msgid, locale=locale)
    if reference:
        text += "\n" + i18n.gettext(REFERENCE, locale=locale).format(reference=reference)
    return text
