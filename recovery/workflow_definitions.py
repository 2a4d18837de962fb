"""Workflows as data: each workflow type is an ordered list of (state, owning role).

The last step is terminal (owning role None). Force transition moves to the next step;
reset moves back to the previous state recorded in ``workflow_transitions``.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES: tuple[str, ...] = (
    "client",
    "manager",
    "junior_manager",
    "controller",
    "technician",
    "warehouse",
    "admin",
)
STAFF_ROLES: tuple[str, ...] = (
    "manager",
    "junior_manager",
    "controller",
    "technician",
    "warehouse",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One workflow step: the state name and the role that owns requests in it."""

    state: str
    role: str | None


WORKFLOWS: dict[str, tuple[Step, ...]] = {
    "connection": (
        Step("new", "manager"),
        Step("assigned", "junior_manager"),
        Step("review", "controller"),
        Step("in_work", "technician"),
        Step("materials", "warehouse"),
        Step("quality_check", "controller"),
        Step("completed", None),
    ),
    "repair": (
        Step("new", "controller"),
        Step("in_work", "technician"),
        Step("materials", "warehouse"),
        Step("quality_check", "controller"),
        Step("completed", None),
    ),
}

# States in which a request may consume warehouse materials.
MATERIAL_STATES: frozenset[str] = frozenset({"in_work", "materials"})
TERMINAL_STATE = "completed"


def workflow(workflow_type: str) -> tuple[Step, ...]:
    """The steps of ``workflow_type``.

    Raises:
        KeyError: unknown workflow type.
    """
    return WORKFLOWS[workflow_type]


def first_step(workflow_type: str) -> Step:
    """The step a new request of ``workflow_type`` starts in."""
    return workflow(workflow_type)[0]


def step_of(workflow_type: str, state: str) -> Step:
    """The step named ``state`` in ``workflow_type``.

    Raises:
        KeyError: the state is not part of the workflow.
    """
    for step in workflow(workflow_type):
        if step.state == state:
            return step
    raise KeyError(f"{workflow_type} has no state {state}")


def next_step(workflow_type: str, state: str) -> Step | None:
    """The step after ``state``, or None when ``state`` is terminal.

    Raises:
        KeyError: the state is not part of the workflow.
    """
    steps = workflow(workflow_type)
    for index, step in enumerate(steps):
        if step.state == state:
            return steps[index + 1] if index + 1 < len(steps) else None
    raise KeyError(f"{workflow_type} has no state {state}")
