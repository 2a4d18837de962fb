"""What the stuck-workflow section keeps in the admin's FSM data between two presses: a
confirmed action or batch waiting for its optional reason, and the reviewed batch (the
exact request list the admin saw), each for at most ``PENDING_TTL_S`` seconds."""

from __future__ import annotations

from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from handlers.callbacks import StuckListCb
from handlers.pending import Pending

PENDING_TTL_S = 15 * 60
"""A confirmation waits this long for its reason (seconds); a batch review as long."""
REASON_MAX = 500
"""A reason longer than this is cut (characters)."""

REASON = Pending("wr_pending", PENDING_TTL_S)
"""The confirmed action (``kind`` single: action, request_id, version, arg) or batch
(``kind`` batch: ``batch``, the review's token) waiting for its reason; ``message_id``: the
prompt whose Skip button is retired when the reason arrives."""
REVIEW = Pending("wr_batch", PENDING_TTL_S)
"""The reviewed batch: action, wf, st, arg, targets [(request id, version)]."""


LIST_KEY = "wr_list"
"""The stuck list the admin last looked at (page, wf, st): where the action screens'
"Cancel" and "Stuck workflows" lead back to, since their callback data has no room left for
the filter (64 bytes, see handlers/callbacks.py)."""


async def remember_list(state: FSMContext, page: int, wf: str | None, st: str | None) -> None:
    """Keep the list the admin is looking at (a page and its filter)."""
    await state.update_data({LIST_KEY: {"page": page, "wf": wf, "st": st}})


async def last_list(state: FSMContext) -> StuckListCb:
    """The list the admin last looked at; the first unfiltered page when none was kept or
    what was kept does not parse any more (an older layout)."""
    kept = (await state.get_data()).get(LIST_KEY)
    if isinstance(kept, dict):
        try:
            return StuckListCb(**kept)
        except ValueError:  # pydantic's ValidationError
            pass
    return StuckListCb()


class StuckRecovery(StatesGroup):
    """Waiting for the optional reason of a confirmed action or batch."""

    reason = State()


async def drop_reason(state: FSMContext) -> None:
    """Forget a confirmation waiting for its reason (the admin went elsewhere)."""
    if await state.get_state() == StuckRecovery.reason.state:
        await state.set_state(None)
    await REASON.drop(state)


async def wait_for_reason(query: CallbackQuery, state: FSMContext, value: dict[str, Any]) -> None:
    """Keep ``value`` until the admin sends a reason (a message) or presses Skip."""
    message = query_message(query)
    await state.set_state(StuckRecovery.reason)
    await REASON.put(state, {**value, "message_id": message.message_id if message else None})


def query_message(query: CallbackQuery) -> Message | None:
    """The menu message of ``query`` when it is still accessible."""
    return query.message if isinstance(query.message, Message) else None


def clean_reason(text: str | None) -> str | None:
    """The reason as stored: no NUL (PostgreSQL text cannot hold it), trimmed, at most
    ``REASON_MAX`` characters; None when empty."""
    return (text or "").replace("\x00", "").strip()[:REASON_MAX] or None
