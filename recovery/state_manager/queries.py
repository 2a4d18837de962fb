"""The requests a client or a role sees."""

from __future__ import annotations

import asyncpg

from database import ledger, requests
from recovery.state_manager.base import ManagerBase


class RequestQueries(ManagerBase):
    """The requests a client or a role sees."""

    async def list_for_client(self, client_id: int, limit: int = 20) -> list[asyncpg.Record]:
        """The client's latest requests, newest first."""
        return await requests.list_for_client(self.pool, client_id, limit=limit)

    async def list_for_role(
        self, role: str, limit: int = 20, *, user_id: int | None = None
    ) -> list[asyncpg.Record]:
        """Active requests owned by ``role``, oldest first; with ``user_id``, only those the
        user may act on (assigned to nobody or to them)."""
        return await requests.list_for_role(self.pool, role, limit=limit, assignee_id=user_id)

    async def list_materials(
        self, *, limit: int = 8, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of materials with their balance (by name) and the number of materials."""
        return await ledger.list_materials(self.pool, limit=limit, offset=offset)

    async def get_material(self, material_id: int) -> asyncpg.Record | None:
        """One material with its balance, or None."""
        return await ledger.get_material(self.pool, material_id)
