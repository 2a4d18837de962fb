"""The stuck-workflow section of ``/workflow_recovery``: paginated list with filters, detail
with history, recovery history; the four recovery actions (``stuck_actions``) and batch
recovery (``stuck_batch``) have their own routers, included here.

Admin access is checked by the package's middleware (``handlers/admin/__init__.py``) on
every message and callback. Every callback is answered once (``AnswerEveryCallback``).
A callback whose fields do not make sense any more (an older layout, a filter that no
longer exists) gets the "menu is outdated" answer and a fresh menu. What waits between two
presses (a reason, a reviewed batch) is kept in the admin's FSM data (``stuck_pending``).
"""

from __future__ import annotations

from aiogram import Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery
from aiogram.utils.callback_answer import CallbackAnswer

from handlers.admin import stuck_action_views as action_views
from handlers.admin import stuck_actions, stuck_batch
from handlers.admin import stuck_views as views
from handlers.admin.menu import fresh_menu
from handlers.admin.stuck_pending import drop_reason, last_list, remember_list
from handlers.callbacks import StuckDetailCb, StuckFilterCb, StuckHistoryCb, StuckListCb
from handlers.screens import edit_or_send, fetch_page
from recovery.batch_selection import valid_filter
from recovery.exceptions import DomainError
from recovery.workflows import WorkflowRecoveryManager, refusal_code

router = Router(name=__name__)

PAGE_SIZE = views.PAGE_SIZE


# --- list, filter, detail, history ---------------------------------------------------------


@router.callback_query(StuckListCb.filter())
async def stuck_list(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckListCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """A page of stuck requests, longest in state first."""
    workflow_type, state_code = callback_data.wf, callback_data.st
    if not valid_filter(workflow_type, state_code):
        await fresh_menu(query, callback_answer)
        return
    await drop_reason(state)
    result, pager = await fetch_page(  # the list shrank below the page: its last page
        lambda limit, offset: workflow_recovery.find_stuck(
            workflow_type=workflow_type, state=state_code, limit=limit, offset=offset
        ),
        lambda r: r.total,
        callback_data.page,
        PAGE_SIZE,
    )
    await remember_list(state, pager.page, workflow_type, state_code)
    await edit_or_send(query, *views.list_screen(result, pager.page, workflow_type, state_code))


@router.callback_query(StuckFilterCb.filter())
async def stuck_filter(
    query: CallbackQuery, callback_answer: CallbackAnswer, callback_data: StuckFilterCb
) -> None:
    """The filter picker."""
    if not valid_filter(callback_data.wf, None):
        await fresh_menu(query, callback_answer)
        return
    await edit_or_send(query, *views.filter_screen(callback_data.wf))


@router.callback_query(StuckDetailCb.filter())
async def stuck_detail(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckDetailCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """A request's detail with its history and the recovery actions. Reached without a list
    (from an action's Cancel or "Open the request"), its Back leads to the list the admin
    last looked at."""
    if not valid_filter(callback_data.wf, callback_data.st):
        await fresh_menu(query, callback_answer)
        return
    await drop_reason(state)
    if (callback_data.page, callback_data.wf, callback_data.st) == (0, None, None):
        last = await last_list(state)
        callback_data = callback_data.model_copy(
            update={"page": last.page, "wf": last.wf, "st": last.st}
        )
    try:
        detail = await workflow_recovery.get_detail(callback_data.request_id)
    except DomainError as exc:
        await edit_or_send(
            query, *action_views.refusal_screen(refusal_code(exc), callback_data.request_id)
        )
        return
    await edit_or_send(query, *views.detail_screen(detail, callback_data))


@router.callback_query(StuckHistoryCb.filter())
async def recovery_history(
    query: CallbackQuery, callback_data: StuckHistoryCb, workflow_recovery: WorkflowRecoveryManager
) -> None:
    """A page of the recovery history (one request's, or all)."""
    (rows, total), pager = await fetch_page(
        lambda limit, offset: workflow_recovery.recovery_history(
            request_id=callback_data.request_id or None, limit=limit, offset=offset
        ),
        lambda r: r[1],
        callback_data.page,
        PAGE_SIZE,
    )
    await edit_or_send(
        query, *views.history_screen(rows, total, pager.page, callback_data.request_id)
    )


# the actions and the batch (their own routers)
router.include_routers(stuck_actions.router, stuck_batch.router)
