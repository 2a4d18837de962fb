"""Replay of a request's history: where a reset goes, what it gives back, and the
fingerprint of those returns shown on the confirmation screen."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from database.compensation import Outstanding


def fingerprint(returns: Sequence[Outstanding]) -> int:
    """CRC-32 of the (issue id, quantity) pairs; 0 when there is nothing to give back."""
    if not returns:
        return 0
    text = ",".join(f"{r.issue_id}:{r.quantity}" for r in sorted(returns, key=lambda r: r.issue_id))
    return zlib.crc32(text.encode())


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where a reset goes and what it undoes.

    ``state`` and ``assignee_id``: the previous step on the history stack and who held it;
    ``undone_visits``: the ``state_entered_at`` of every visit of the current step (its
    entry, and each re-entry after a reset back to it), whose material issues the reset
    gives back.
    """

    state: str
    assignee_id: int | None
    undone_visits: tuple[datetime, ...]


def reset_target(
    path: Sequence[asyncpg.Record], current_state: str, current_entered_at: datetime
) -> ResetTarget | None:
    """Replay the history (oldest first) as a stack; None when there is nothing to go back to.

    Transitions that move (create, normal, force, complete) push their target state, entered
    at the row's ``created_at`` (the same ``now()`` as the request's ``state_entered_at``:
    one transaction); an assignment (assign, reassign) changes the top's holder; a reset pops
    the top and re-enters the step below it (a new visit of the same step). So a second reset
    goes one step further back instead of redoing the first, and what a step consumed in any
    of its visits goes back when that step is undone. A history whose top is not the current
    state (rows written outside the workflow) gives None.
    """
    stack: list[tuple[str, list[Any]]] = []  # (state, [assignee id, visits])
    for row in path:
        kind = row["kind"]
        if kind in ("assign", "reassign"):
            if stack:
                stack[-1][1][0] = row["to_assignee_id"]
            continue
        if kind == "reset" and stack:
            stack.pop()
            if stack and stack[-1][0] == row["to_state"]:
                stack[-1][1][0] = row["to_assignee_id"]
                stack[-1][1][1].append(row["created_at"])
                continue
        stack.append((row["to_state"], [row["to_assignee_id"], [row["created_at"]]]))
    if len(stack) < 2 or stack[-1][0] != current_state:
        return None
    visits = tuple(dict.fromkeys([*stack[-1][1][1], current_entered_at]))
    state, (assignee_id, _visits) = stack[-2]
    return ResetTarget(state=state, assignee_id=assignee_id, undone_visits=visits)
