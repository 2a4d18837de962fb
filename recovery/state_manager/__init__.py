"""``EnhancedStateManager``: the workflow operations, each one audited database transaction.

Operations: open a request (``create_request``), move it to the next step (``advance``),
use materials for it (``use_materials``); assigning a request is an admin recovery action
(``recovery.workflows``, ``RecoveryAction.REASSIGN``). Each runs through
``recovery.transactions.TransactionalStateManager``: one transaction that fully happens or
leaves nothing but its ``transaction_log`` row, retried as a whole on transient failures
(SQLSTATE 40001, 40P01, class 08, dropped connections) with exponential backoff and full
jitter. Refusals are the project's typed errors (``recovery.exceptions``).

State changes (create, advance) lock the request (``FOR UPDATE``), check the version
the caller saw (optimistic locking on ``service_requests.version``), write
``workflow_transitions`` and enqueue their notifications into ``pending_notifications`` in
the same transaction (transactional outbox; idempotency keys from the transition id).

Permission comes before state: an actor who may not act on a request (``may_act``) gets one
``PermissionDeniedError`` whether the request exists or not, whatever its version and
status, so that a refusal tells nothing about a request the actor may not see. Only then
are the version and the status checked.

A material use does not change the request's state: it holds the request ``FOR SHARE`` (so
the state cannot move meanwhile, other uses are not blocked), decrements the balance with a
guarded UPDATE that can never go below zero, and writes an ``issue`` row to the ledger under
the caller's idempotency key, so a repeated use is counted once.
"""

from recovery.state_manager.manager import EnhancedStateManager
from recovery.state_manager.model import (
    MAX_DESCRIPTION_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MaterialUse,
    may_act,
)

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "EnhancedStateManager",
    "MaterialUse",
    "may_act",
]
