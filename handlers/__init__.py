"""aiogram routers: parse input, call the core, render replies. No SQL, no business rules."""

from __future__ import annotations

from aiogram import Router


def build_root_router() -> Router:
    """All routers in dispatch order; the fallback (outdated buttons) comes last."""
    from handlers import admin, client, common, fallback, staff

    root = Router(name="root")
    root.include_routers(common.router, client.router, staff.router, admin.router, fallback.router)
    return root
