"""The named steps of each state-manager operation, in order, by its ``transaction_log``
operation name: where the fault tests inject a failure (``TransactionContext.step``)."""

from __future__ import annotations

STEPS: dict[str, list[str]] = {
    "create_request": ["insert_request", "history", "outbox", "before_commit"],
    "advance": ["lock", "apply_state", "history", "outbox", "before_commit"],
    # assigning a request: the admin's reassign (recovery.workflows), the handlers' path
    "recovery.reassign": [
        "lock",
        "apply_state",
        "history",
        "compensation",
        "recovery_log",
        "outbox",
        "before_commit",
    ],
    "use_materials": ["lock", "ledger", "decrement", "before_commit"],
}
