"""Where a reset goes: the history replayed as a stack (pure function, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from recovery.workflows import reset_target

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(kind: str, from_state: str | None, to_state: str, hour: int, to: int | None = None) -> Any:
    return {
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "to_assignee_id": to,
        "created_at": T0 + timedelta(hours=hour),
    }


def _at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


PATH = [
    _row("create", None, "new", 0),
    _row("normal", "new", "assigned", 1),
    _row("assign", "assigned", "assigned", 2, to=7),
    _row("force", "assigned", "review", 3),
]


def test_previous_state_and_its_holder() -> None:
    target = reset_target(PATH, "review", _at(3))
    assert target is not None
    assert (target.state, target.assignee_id, target.undone_visits) == ("assigned", 7, (_at(3),))


def test_no_history_or_only_the_creation_gives_nothing() -> None:
    assert reset_target([], "new", _at(0)) is None
    assert reset_target(PATH[:1], "new", _at(0)) is None


def test_a_history_that_does_not_end_in_the_current_state_gives_nothing() -> None:
    assert reset_target(PATH, "in_work", _at(9)) is None


def test_resets_pop_and_the_re_entered_step_keeps_its_earlier_visits() -> None:
    path = [*PATH, _row("reset", "review", "assigned", 4, to=7)]
    target = reset_target(path, "assigned", _at(4))
    assert target is not None
    assert (target.state, target.assignee_id) == ("new", None)
    assert target.undone_visits == (_at(1), _at(4))
    twice = [*path, _row("reset", "assigned", "new", 5)]
    assert reset_target(twice, "new", _at(5)) is None


def test_the_current_visit_counts_even_when_its_row_time_differs() -> None:
    target = reset_target(PATH, "review", _at(3) + timedelta(microseconds=5))
    assert target is not None
    assert target.undone_visits == (_at(3), _at(3) + timedelta(microseconds=5))
