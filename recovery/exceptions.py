"""The project's own (domain) exceptions. Each carries the data needed to answer or recover.

``recovery.errors.classify`` maps them onto categories: insufficient stock -> inventory;
invalid transition, permission denied, concurrent modification -> business_logic; input
validation -> data.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of the project's own errors."""


class InputValidationError(DomainError):
    """The user's input cannot be accepted (``field``: which input, ``reason``: why)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class NotFoundError(DomainError):
    """An entity id that does not exist (``entity``, ``entity_id``)."""

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} not found")
        self.entity = entity
        self.entity_id = entity_id


class InvalidTransitionError(DomainError):
    """A workflow step that is not allowed from the request's current state."""

    def __init__(self, request_id: int, state: str, detail: str) -> None:
        super().__init__(f"request {request_id} in state {state}: {detail}")
        self.request_id = request_id
        self.state = state
        self.detail = detail


class PermissionDeniedError(DomainError):
    """The actor's role may not perform this action."""

    def __init__(self, action: str, role: str | None = None) -> None:
        super().__init__(f"permission denied: {action} (role {role})")
        self.action = action
        self.role = role


class ConcurrentModificationError(DomainError):
    """Optimistic locking failed: the row's ``version`` is no longer ``expected_version``."""

    def __init__(self, entity: str, entity_id: int, expected_version: int | None = None) -> None:
        super().__init__(
            f"{entity} {entity_id} was modified concurrently (expected version {expected_version})"
        )
        self.entity = entity
        self.entity_id = entity_id
        self.expected_version = expected_version


class InsufficientStockError(DomainError):
    """A material use asked for more than the balance (``requested`` > ``available``)."""

    def __init__(self, material_id: int, requested: int, available: int | None = None) -> None:
        super().__init__(f"material {material_id}: requested {requested}, available {available}")
        self.material_id = material_id
        self.requested = requested
        self.available = available


class TransactionInDoubtError(Exception):
    """A transaction's COMMIT was sent but its answer was lost, and ``transaction_log`` could
    not be read afterwards to tell whether it committed. The change happened once or not at
    all, never twice; ``transaction_id`` finds it in ``transaction_log`` (a ``committed`` row
    exists exactly when it did). Not a domain error: nothing the user did caused it."""

    def __init__(self, transaction_id: object, operation: str) -> None:
        super().__init__(f"{operation} {transaction_id}: COMMIT outcome unknown")
        self.transaction_id = transaction_id
        self.operation = operation
