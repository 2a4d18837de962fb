"""aiogram routers: parse input, call the core, render replies. No SQL, no business rules."""

from __future__ import annotations

from aiogram import Router


def build_root_router() -> Router:
    """All routers in dispatch order; the fallback (outdated buttons) comes last. The root
    asks each router's gate before entering it (``handlers.routing.GatedRouter``)."""
    from handlers import admin, client, common, fallback, staff
    from handlers.routing import GatedRouter

    root = GatedRouter(name="root")
    root.include_routers(common.router, client.router, staff.router, admin.router, fallback.router)
    return root
