"""``InventoryReconciliationManager``: find and fix stock discrepancies against the ledger.

The ledger (``inventory_transactions``) is the source of truth; ``materials.balance`` is a
running total that must equal the material's ledger sum, and nothing may stay negative.
Kinds of discrepancy (``DiscrepancyKind``), the fix each one gets, and ``amount`` (the signed
correction the fix writes):

- ``drift``: balance <> ledger sum (both >= 0). The balance is wrong, not the ledger: the fix
  sets the balance to the ledger sum and writes no ledger row. amount = ledger - balance.
- ``negative_balance``: balance < 0 while the ledger sum is >= 0: fixed like drift.
- ``negative_ledger``: the ledger sum itself is < 0 (more issued than ever received). The fix
  writes an ``adjustment`` ledger row of ``-ledger`` and sets the balance to 0. A stock
  write-up, so by default it waits for an admin. amount = -ledger.
- ``orphaned_transaction``: the net of the ledger rows booked against a request that does
  not exist, is cancelled, or never reached a state that uses materials
  (``MATERIAL_STATES``) is an outflow, and the newest row is older than the grace period.
  The fix writes one reversing ``adjustment`` (same request_id, ``reverses_id`` = the issue
  when there is one) and moves the balance with it. amount = -net.
- ``duplicate_reference``: a second unreversed ledger row with the same
  ``(material_id, external_reference)`` (imported rows; ``idempotency_key`` stays unique).
  The fix reverses the later row and moves the balance with it. amount = -quantity.

Detection is set-based (a few queries per chunk of materials, in one REPEATABLE READ
snapshot). A fix is one transaction per material that locks the material row, re-detects
under the lock, applies row-level fixes first (they change the ledger sum), then
re-evaluates the material-level kind, and writes per fix a ``inventory_reconciliation_log``
row (before, after, action, actor). Open discrepancies live in ``inventory_discrepancies``;
an admin may accept one with a reason, which covers that fingerprint and amount only.
Runs, fixes and acceptances are serialised across instances by an advisory lock.
"""

from recovery.inventory.manager import InventoryReconciliationManager
from recovery.inventory.model import (
    ALL_KINDS,
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyPage,
    FixOutcome,
    Progress,
    ReconciliationPolicy,
    RunReport,
    classify_material,
)

__all__ = [
    "ALL_KINDS",
    "Discrepancy",
    "DiscrepancyKind",
    "DiscrepancyPage",
    "FixOutcome",
    "InventoryReconciliationManager",
    "Progress",
    "ReconciliationPolicy",
    "RunReport",
    "classify_material",
]
