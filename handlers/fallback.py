"""Last router: an answer to everything no other router took.

- A button nobody handles (an older menu layout, a removed feature, a field out of range)
  is answered with "this menu is outdated" instead of a spinning button or an error; an
  admin's outdated admin-menu button also gets a fresh admin menu in place of the old one.
- A message nobody handles gets a short hint: at a dialogue step, what the step expects
  (a photo where ``/new`` waits for a description: "send the description as text");
  outside a dialogue, an unknown command, free text, a photo or a sticker each get a line
  that points to ``/help``."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __

from handlers.admin import MENU_PREFIXES
from handlers.admin.menu import fresh_menu
from handlers.screens import alert

router = Router(name=__name__)

# what each dialogue step waits for, by the raw FSM state name (``<StatesGroup>:<state>``
# of handlers/client.py and handlers/admin/*.py; tests/unit/test_fallback_hints.py checks
# that every state has one)
STEP_HINTS = {
    "NewRequest:description": __(
        "I am waiting for the description of your request: send it as a text message "
        "(what is wrong and the address), or /new to start again."
    ),
    "UseMaterial:quantity": __(
        "I am waiting for the quantity: send a whole number, or /use to start again."
    ),
    "StuckRecovery:reason": __(
        "I am waiting for the reason of the recovery action: send it as a text message, or "
        "press “Apply without a reason” above."
    ),
    "InventoryAccept:reason": __(
        "I am waiting for the reason for accepting the discrepancy: send it as a text message."
    ),
    "ErrorLookup:reference": __(
        "I am waiting for an error reference such as E-7K3M9Q: send it as a text message."
    ),
}


def message_hint(message: Message, raw_state: str | None) -> str:
    """The hint for a message no handler took (see the module docstring)."""
    if raw_state in STEP_HINTS:
        return str(STEP_HINTS[raw_state])
    text = message.text or ""
    if text.startswith("/"):
        return _("I do not know this command. Send /help to see what you can do.")
    if text:
        return _("I answer commands only. Send /help to see what you can do.")
    return _("I can read only text messages and commands. Send /help to see what you can do.")


def is_admin_menu_data(data: str | None) -> bool:
    """True for callback data whose prefix (before the first ``:``, aiogram's separator)
    is one of the admin menu's ``CallbackData`` prefixes."""
    return bool(data) and (data or "").split(":", 1)[0] in MENU_PREFIXES


@router.callback_query()
async def outdated_button(
    query: CallbackQuery, callback_answer: CallbackAnswer, is_admin: bool = False
) -> None:
    """Answers any callback no other router took."""
    if is_admin and is_admin_menu_data(query.data):
        await fresh_menu(query, callback_answer)
        return
    alert(callback_answer, _("This menu is outdated. Send the command again."))


@router.message()
async def unhandled_message(message: Message, raw_state: str | None = None) -> None:
    """Answers any private message no other router took with what to send instead (a
    group's chatter is left alone)."""
    if message.chat.type != "private":
        return
    await message.answer(message_hint(message, raw_state), parse_mode=None)
