"""Batch recovery in the stuck-workflow section: choose the action (and, to reassign, the
assignee), review the exact (request, version) list it will touch, confirm with an
optional reason, then the counts. Which requests and who may receive them is
``recovery.batch_selection``'s."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery
from aiogram.utils.callback_answer import CallbackAnswer

from handlers.admin import stuck_action_views as action_views
from handlers.admin import stuck_batch_views as batch_views
from handlers.admin import stuck_views as views
from handlers.admin.menu import fresh_menu
from handlers.admin.stuck_pending import (
    REVIEW,
    drop_reason,
    last_list,
    query_message,
    wait_for_reason,
)
from handlers.callbacks import StuckBatchCb, StuckBatchRunCb, StuckListCb
from handlers.screens import answer_now, edit_or_send, replace
from recovery.actors import Actor
from recovery.batch_selection import batch_role, select_batch, valid_filter
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager

router = Router(name=__name__)

PAGE_SIZE = views.PAGE_SIZE


@router.callback_query(StuckBatchCb.filter())
async def batch(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckBatchCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Choose the action, (reassign) the assignee, then the review screen, which keeps the
    exact (request, version) list the batch will touch."""
    workflow_type, state_code = callback_data.wf, callback_data.st
    if not valid_filter(workflow_type, state_code):
        await fresh_menu(query, callback_answer)
        return
    await drop_reason(state)
    if callback_data.action is None:
        found = await workflow_recovery.find_stuck(
            workflow_type=workflow_type, state=state_code, limit=1
        )
        await edit_or_send(
            query, *batch_views.batch_menu_screen(found.total, workflow_type, state_code)
        )
        return
    action = views.ACTION_OF[callback_data.action]
    if action is RecoveryAction.REASSIGN and callback_data.arg == 0:
        await _candidates(query, callback_answer, callback_data, workflow_recovery)
        return
    selection = await select_batch(
        workflow_recovery, action, workflow_type, state_code, callback_data.arg
    )
    if selection is None:
        await fresh_menu(query, callback_answer)
        return
    if not selection.targets:
        await edit_or_send(query, *batch_views.batch_menu_screen(0, workflow_type, state_code))
        return
    token = await REVIEW.put(
        state,
        {
            "action": action.value,
            "wf": workflow_type,
            "st": state_code,
            "arg": callback_data.arg,
            "targets": [list(target) for target in selection.targets],
        },
    )
    await edit_or_send(
        query,
        *batch_views.batch_review_screen(
            action,
            len(selection.targets),
            selection.capped,
            workflow_type,
            state_code,
            selection.materials,
            selection.assignee_name,
            token,
            request_ids=[target[0] for target in selection.targets],
        ),
    )


async def _candidates(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckBatchCb,
    manager: WorkflowRecoveryManager,
) -> None:
    """A page of the users of the filter's role (the batch's assignee)."""
    role = batch_role(callback_data.wf, callback_data.st)
    if role is None:
        await fresh_menu(query, callback_answer)
        return
    rows, total = await manager.reassign_candidates(
        role, limit=PAGE_SIZE, offset=callback_data.page * PAGE_SIZE
    )
    await edit_or_send(
        query, *batch_views.batch_candidates_screen(callback_data, role, rows, total)
    )


async def run_batch(
    manager: WorkflowRecoveryManager, admin: Actor, reviewed: dict[str, Any], reason: str | None
) -> views.Screen:
    """Apply the reviewed batch (each request in its own transaction); the result screen."""
    action = RecoveryAction(reviewed["action"])
    result = await manager.apply_batch(
        action,
        [(int(request_id), int(version)) for request_id, version in reviewed["targets"]],
        admin=admin,
        reason=reason,
        assignee_id=reviewed["arg"] if action is RecoveryAction.REASSIGN else None,
    )
    back = StuckListCb(wf=reviewed.get("wf"), st=reviewed.get("st"))
    return batch_views.batch_result_screen(result, back)


@router.callback_query(StuckBatchRunCb.filter(F.step == 1))
async def batch_reason(
    query: CallbackQuery, callback_data: StuckBatchRunCb, state: FSMContext
) -> None:
    """A reviewed batch confirmed: wait for an optional reason or Skip."""
    reviewed = await REVIEW.peek(state, callback_data.token)
    if reviewed is None:
        await edit_or_send(query, *batch_views.batch_outdated_screen(await last_list(state)))
        return
    await wait_for_reason(query, state, {"kind": "batch", "batch": callback_data.token})
    await edit_or_send(
        query,
        *action_views.reason_prompt(
            StuckBatchRunCb(token=callback_data.token, step=2),
            StuckListCb(wf=reviewed["wf"], st=reviewed["st"]),
        ),
    )


@router.callback_query(StuckBatchRunCb.filter(F.step == 2))
async def batch_apply(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckBatchRunCb,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Skip: run the reviewed batch (each request in its own transaction), then the counts."""
    await answer_now(query, callback_answer)  # a batch takes a while
    await drop_reason(state)
    reviewed = await REVIEW.take(state, callback_data.token)
    if reviewed is None:
        await edit_or_send(query, *batch_views.batch_outdated_screen(await last_list(state)))
        return
    action = RecoveryAction(reviewed["action"])
    await edit_or_send(query, batch_views.batch_progress_text(action, len(reviewed["targets"])))
    screen = await run_batch(workflow_recovery, Actor.of(user), reviewed, None)
    if (message := query_message(query)) is not None:
        await replace(message, *screen)
