"""Which stuck requests a batch recovery touches, and who may receive them: the rules of a
batch, apart from the screens that ask for them.

A batch is chosen by a filter (workflow type and state, each optional) and runs over the
exact (request id, version) list reviewed by the admin, the longest stuck first, at most
``BATCH_MAX`` of them. A batch reassignment needs one owning role (type and state both
chosen) and an assignee of that role.
"""

from __future__ import annotations

from dataclasses import dataclass

from database.compensation import Outstanding
from recovery import workflow_definitions as wf
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager

BATCH_MAX = 1000
"""At most this many requests in one batch (the longest stuck first)."""

STATES_OF: dict[str, frozenset[str]] = {
    name: frozenset(step.state for step in steps if step.role is not None)
    for name, steps in wf.WORKFLOWS.items()
}
"""The states a request of each workflow type can be stuck in (those owned by a role)."""
ALL_STATES: frozenset[str] = frozenset().union(*STATES_OF.values())


def valid_filter(workflow_type: str | None, state: str | None) -> bool:
    """True when the filter names an existing workflow type and one of its states (or any
    type's state without a type); None means "any"."""
    if workflow_type is not None and workflow_type not in STATES_OF:
        return False
    if state is None:
        return True
    return state in (STATES_OF[workflow_type] if workflow_type else ALL_STATES)


def batch_role(workflow_type: str | None, state: str | None) -> str | None:
    """The role owning the filter's state: a batch reassignment needs one (type and state
    both chosen); None otherwise."""
    if workflow_type is None or state is None:
        return None
    return wf.step_of(workflow_type, state).role


@dataclass(frozen=True)
class BatchSelection:
    """What a batch will touch: ``targets`` (request id, version), longest stuck first;
    ``capped`` when more matched than ``BATCH_MAX``; ``materials`` the reset would return;
    ``assignee_name`` for a reassignment."""

    targets: list[tuple[int, int]]
    capped: bool
    materials: list[Outstanding]
    assignee_name: str | None = None


async def select_batch(
    manager: WorkflowRecoveryManager,
    action: RecoveryAction,
    workflow_type: str | None,
    state: str | None,
    assignee_id: int = 0,
) -> BatchSelection | None:
    """The requests the batch touches now. None when the batch is not possible as asked:
    a reassignment without one owning role, or to a user who does not exist or has another
    role (an outdated button)."""
    assignee_name = None
    if action is RecoveryAction.REASSIGN:
        role = batch_role(workflow_type, state)
        assignee = await manager.get_user(assignee_id) if assignee_id else None
        if role is None or assignee is None or assignee["role"] != role:
            return None
        assignee_name = assignee["full_name"] or str(assignee["telegram_id"])
    targets = await manager.stuck_targets(
        workflow_type=workflow_type, state=state, at_most=BATCH_MAX + 1
    )
    capped, targets = len(targets) > BATCH_MAX, targets[:BATCH_MAX]
    materials = (
        await manager.preview_batch_materials(action, [request_id for request_id, _ in targets])
        if targets
        else []
    )
    return BatchSelection(targets, capped, materials, assignee_name)
