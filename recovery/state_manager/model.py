"""What the actor of a request (``recovery.actors.Actor``) may do: ``may_act``, the limits of the
operations' input, and the result of a material use."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from recovery.actors import Actor

MAX_DESCRIPTION_LENGTH = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 200


def may_act(actor: Actor, request: asyncpg.Record | None) -> bool:
    """Whether ``actor`` may work on ``request`` (None: it does not exist): an admin on any
    request; staff on an active request of their role that is assigned to nobody or to
    them; nobody else (clients, other roles, a missing or finished request)."""
    if actor.role == "admin":
        return True
    return (
        request is not None
        and request["status"] == "active"
        and request["owner_role"] == actor.role
        and request["assignee_id"] in (None, actor.user_id)
    )


@dataclass(frozen=True, slots=True)
class MaterialUse:
    """The outcome of ``use_materials``.

    Attributes:
        ledger_id: the ``inventory_transactions`` row of this use.
        material_id, request_id: what was used, for which request.
        quantity: units taken from stock (> 0; the ledger row holds ``-quantity``).
        balance_after: the material's balance right after this use (for a duplicate: the
            balance now).
        duplicate: the idempotency key had been used already; nothing was taken again.
    """

    ledger_id: int
    material_id: int
    request_id: int
    quantity: int
    balance_after: int
    duplicate: bool = False
