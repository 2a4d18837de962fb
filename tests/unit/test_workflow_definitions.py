"""Workflows as data: ordered (state, role) steps."""

from __future__ import annotations

import pytest

from recovery import workflow_definitions as wf


def test_connection_workflow_follows_the_design_order() -> None:
    assert [(s.state, s.role) for s in wf.workflow("connection")] == [
        ("new", "manager"),
        ("assigned", "junior_manager"),
        ("review", "controller"),
        ("in_work", "technician"),
        ("materials", "warehouse"),
        ("quality_check", "controller"),
        ("completed", None),
    ]


def test_next_step_walks_forward_and_stops_at_the_terminal_state() -> None:
    assert wf.next_step("repair", "new") == wf.Step("in_work", "technician")
    assert wf.next_step("repair", "completed") is None


def test_unknown_state_is_an_error() -> None:
    with pytest.raises(KeyError):
        wf.next_step("repair", "assigned")


@pytest.mark.parametrize("workflow_type", sorted(wf.WORKFLOWS))
def test_every_workflow_ends_in_the_terminal_state_and_uses_known_roles(workflow_type: str) -> None:
    steps = wf.workflow(workflow_type)
    assert steps[-1] == wf.Step(wf.TERMINAL_STATE, None)
    assert all(step.role in wf.ROLES for step in steps[:-1])
