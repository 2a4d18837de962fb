"""Who acted, in one module: ``Actor`` (a staff member working on a request: user id and
role) and ``AdminRef`` (an admin acting from the admin menu: user id and Telegram id), and
``actor_name``, the text an inventory log row stores for an actor (``admin:<telegram id>``,
or ``scheduler`` for the nightly run; the stored values are unchanged)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

SCHEDULER_ACTOR = "scheduler"
"""The ``actor`` stored for the scheduled reconciliation run."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation: the user's id and role."""

    user_id: int
    role: str


@dataclass(frozen=True, slots=True)
class AdminRef:
    """The admin performing an action: user id (None when only listed in ADMIN_IDS) and
    Telegram id."""

    user_id: int | None
    telegram_id: int

    @classmethod
    def of(cls, user: Mapping[str, Any] | asyncpg.Record) -> AdminRef:
        """The admin behind a ``users`` row (keys ``id`` and ``telegram_id``)."""
        return cls(user_id=user["id"], telegram_id=user["telegram_id"])


def admin_actor(telegram_id: int) -> str:
    """The ``actor`` recorded for an admin's action: ``admin:<telegram id>``."""
    return f"admin:{telegram_id}"


def actor_name(actor: AdminRef | str) -> str:
    """The ``actor`` text stored in the inventory log and discrepancies: an admin as
    ``admin:<telegram id>``; a text (``SCHEDULER_ACTOR``) as it is."""
    return actor if isinstance(actor, str) else admin_actor(actor.telegram_id)
