"""What "stuck" means for this deployment: the deadline of every workflow state.

The definition itself (over the deadline, or held by an unreachable assignee) is one SQL
definition in ``database/stuck.py``; this module only says which deadlines it runs with, so
that the stuck list, the health figure, the metric and the digests count the same requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from database import stuck
from database.pool import AnyConnection
from database.stuck import Limit
from recovery import workflow_definitions as wf

DEFAULT_THRESHOLD_S = 24 * 3600.0
"""A state's deadline when none is configured (``STUCK_DEFAULT_THRESHOLD_S``): 24 h."""


@dataclass(frozen=True, slots=True)
class StuckPolicy:
    """Deadlines in seconds: ``default_threshold_s`` unless ``thresholds`` names the
    (workflow type, state). Build it with ``of`` from the settings' shape."""

    default_threshold_s: float = DEFAULT_THRESHOLD_S
    thresholds: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        default_threshold_s: float = DEFAULT_THRESHOLD_S,
        thresholds: Mapping[str, float] | None = None,
    ) -> StuckPolicy:
        """From ``STUCK_DEFAULT_THRESHOLD_S`` and ``STUCK_THRESHOLDS`` (seconds per
        ``"workflow_type:state"``).

        Raises:
            ValueError: a threshold that is not positive, or a state no workflow has.
        """
        if default_threshold_s <= 0:
            raise ValueError("the default stuck threshold must be positive")
        parsed: dict[tuple[str, str], float] = {}
        for key, seconds in (thresholds or {}).items():
            workflow_type, _, state = key.partition(":")
            try:
                wf.step_of(workflow_type, state)
            except KeyError:
                raise ValueError(f"stuck threshold for unknown workflow state {key!r}") from None
            if float(seconds) <= 0:
                raise ValueError(f"stuck threshold {key!r} must be positive")
            parsed[(workflow_type, state)] = float(seconds)
        return cls(float(default_threshold_s), parsed)

    def threshold_s(self, workflow_type: str, state: str) -> float:
        """The deadline of a state in seconds."""
        return self.thresholds.get((workflow_type, state), self.default_threshold_s)

    def limits(self, workflow_type: str | None = None, state: str | None = None) -> list[Limit]:
        """The deadline of every non-terminal (workflow type, state), optionally filtered."""
        return [
            Limit(name, step.state, self.threshold_s(name, step.state))
            for name, steps in wf.WORKFLOWS.items()
            if workflow_type in (None, name)
            for step in steps
            if step.role is not None and state in (None, step.state)
        ]

    async def count(self, conn: AnyConnection | asyncpg.Pool) -> int:
        """How many requests are stuck now (``database.stuck.count``)."""
        return await stuck.count(conn, self.limits())
