"""Who acted, in one type: ``Actor``, a person (a staff member working on a request, an admin
acting from the admin menu) or the scheduler (``SCHEDULER_ACTOR``). Every recovery, state
manager, inventory, notification-queue and audit operation that names who acts takes one.

What each trail stores of it is unchanged: ``transaction_log``, ``admin_audit_log``,
``workflow_recovery_log`` and an error group's ``resolved_by`` store ``user_id`` (the audit
log the Telegram id too); the inventory log and discrepancies store ``Actor.name``
(``admin:<telegram id>``, or ``scheduler`` for the scheduled run)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation.

    Attributes:
        user_id: the ``users.id``; None for the scheduler (no user behind it).
        role: the ``users.role`` (``client``, ``technician``, ``admin``...);
            ``scheduler`` for the scheduled run.
        telegram_id: the user's Telegram id, when known (an admin's is what the inventory
            log stores); None for the scheduler.
    """

    user_id: int | None
    role: str
    telegram_id: int | None = None

    @classmethod
    def of(cls, user: Mapping[str, Any] | asyncpg.Record) -> Actor:
        """The actor behind a ``users`` row (keys ``id``, ``role`` and ``telegram_id``)."""
        return cls(user_id=user["id"], role=user["role"], telegram_id=user["telegram_id"])

    @property
    def name(self) -> str:
        """The ``actor`` text the inventory log and discrepancies store: a person as
        ``admin:<telegram id>`` (only admins act on the inventory), an actor without a
        Telegram id by its role (``scheduler``)."""
        return self.role if self.telegram_id is None else f"admin:{self.telegram_id}"


SCHEDULER_ACTOR = Actor(user_id=None, role="scheduler")
"""The scheduled reconciliation run; stored as ``scheduler``."""
