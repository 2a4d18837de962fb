"""SQL that loads the demo data set (``python -m bot seed-demo``). Idempotent: a second run
finds the demo users and changes nothing."""

from __future__ import annotations

from database.pool import AnyConnection

# Demo users live in a Telegram id range no real account uses in this setup.
DEMO_TELEGRAM_ID_BASE = 9_000_000_000

DEMO_USERS = [
    # (offset, name, role, language)
    (1, "Dilnoza Karimova", "client", "uz"),
    (2, "Ivan Petrov", "client", "ru"),
    (3, "Alice Brown", "client", "en"),
    (10, "Maria Manager", "manager", "en"),
    (11, "Jamshid Junior", "junior_manager", "uz"),
    (12, "Oleg Controller", "controller", "ru"),
    (13, "Tom Technician", "technician", "en"),
    (14, "Aziz Technician", "technician", "uz"),
    (15, "Wendy Warehouse", "warehouse", "en"),
    (20, "Ada Admin", "admin", "en"),
]

# (workflow, client offset, state, role, hours in state, description)
DEMO_REQUESTS = [
    ("connection", 1, "new", "manager", 2, "New fibre connection, Chilonzor 12"),
    ("connection", 2, "assigned", "junior_manager", 30, "Connect office, Lenina 5"),
    ("connection", 3, "review", "controller", 52, "Home internet, Baker St 221b"),
    ("connection", 1, "in_work", "technician", 80, "Install router, Yunusobod 7"),
    ("connection", 2, "materials", "warehouse", 27, "Cable for Sergeli 3"),
    ("connection", 3, "quality_check", "controller", 5, "Check line, Mirzo 9"),
    ("repair", 1, "new", "controller", 49, "No signal since Monday"),
    ("repair", 2, "in_work", "technician", 3, "Slow speed in the evening"),
    ("repair", 3, "materials", "warehouse", 100, "Replace damaged cable"),
    ("repair", 1, "quality_check", "controller", 1, "Router reboots"),
]

# (sku, name, unit, receipts, issues, balance drift added on top of the ledger)
DEMO_MATERIALS = [
    ("CBL-UTP5E", "UTP cable cat5e", "m", 500, 120, 0),
    ("RTR-AX1800", "Wi-Fi router AX1800", "pcs", 40, 12, 0),
    ("ONT-GPON", "GPON ONT terminal", "pcs", 25, 27, 0),  # ledger and balance negative
    ("CON-RJ45", "RJ45 connector", "pcs", 1000, 300, -15),  # balance drifted below ledger
    ("SPL-1X8", "Optical splitter 1x8", "pcs", 10, 4, 0),
]


async def already_seeded(conn: AnyConnection) -> bool:
    """True when the demo users exist."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE telegram_id = $1)",
            DEMO_TELEGRAM_ID_BASE + DEMO_USERS[0][0],
        )
    )


DEMO_NOTIFICATIONS = [
    # (status, attempts, last error) of notifications to the third client that failed
    ("dead", 5, "TelegramServerError: Bad Gateway"),
    ("dead", 5, "TelegramNetworkError: timeout"),
    ("retrying", 2, "TelegramServerError: Bad Gateway"),
]


async def seed(conn: AnyConnection, admin_telegram_ids: list[int]) -> dict[str, int]:
    """Insert the demo data set in the caller's transaction; returns row counts."""
    ids = await _seed_users(conn, admin_telegram_ids)
    request_ids = await _seed_requests(conn, ids)
    await _seed_materials(conn, issued_for=request_ids[3])
    await _seed_notifications(conn, client_id=ids[3], request_id=request_ids[2])
    return {
        "users": len(DEMO_USERS) + len(admin_telegram_ids),
        "requests": len(DEMO_REQUESTS),
        "materials": len(DEMO_MATERIALS),
        "notifications": len(DEMO_NOTIFICATIONS),
    }


async def _seed_users(conn: AnyConnection, admin_telegram_ids: list[int]) -> dict[int, int]:
    """The demo users (returns ``users.id`` by ``DEMO_USERS`` offset) and the admins of
    ``ADMIN_IDS`` (made admins if they exist)."""
    ids: dict[int, int] = {}
    for offset, name, role, language in DEMO_USERS:
        ids[offset] = await conn.fetchval(
            "INSERT INTO users (telegram_id, full_name, role, language) VALUES ($1, $2, $3, $4) "
            "RETURNING id",
            DEMO_TELEGRAM_ID_BASE + offset,
            name,
            role,
            language,
        )
    for telegram_id in admin_telegram_ids:
        await conn.execute(
            "INSERT INTO users (telegram_id, full_name, role) VALUES ($1, 'Admin', 'admin') "
            "ON CONFLICT (telegram_id) DO UPDATE SET role = 'admin'",
            telegram_id,
        )
    return ids


async def _seed_requests(conn: AnyConnection, ids: dict[int, int]) -> list[int]:
    """The demo requests with their history (created a day before they entered their
    state, moved there by the manager); returns their ids in ``DEMO_REQUESTS`` order."""
    request_ids: list[int] = []
    for workflow, client, state, role, hours, description in DEMO_REQUESTS:
        request_id = await conn.fetchval(
            """
            INSERT INTO service_requests (workflow_type, client_id, description, current_state,
                                          owner_role, state_entered_at, created_at)
            VALUES ($1, $2, $3, $4, $5, now() - make_interval(hours => $6),
                    now() - make_interval(hours => $6 + 24))
            RETURNING id
            """,
            workflow,
            ids[client],
            description,
            state,
            role,
            hours,
        )
        request_ids.append(request_id)
        await conn.execute(
            """
            INSERT INTO workflow_transitions (request_id, from_state, to_state, to_role,
                                              actor_id, kind, created_at)
            VALUES ($1, NULL, 'new', $2, $3, 'create', now() - make_interval(hours => $4 + 24))
            """,
            request_id,
            role if state == "new" else None,
            ids[client],
            hours,
        )
        if state != "new":
            await conn.execute(
                """
                INSERT INTO workflow_transitions (request_id, from_state, to_state, to_role,
                                                  actor_id, kind, created_at)
                VALUES ($1, 'new', $2, $3, $4, 'normal', now() - make_interval(hours => $5))
                """,
                request_id,
                state,
                role,
                ids[10],
                hours,
            )
    return request_ids


async def _seed_materials(conn: AnyConnection, *, issued_for: int) -> None:
    """The demo materials: a receipt and an issue (to request ``issued_for``) each, the
    balance off the ledger by the material's drift."""
    for sku, name, unit, received, issued, drift in DEMO_MATERIALS:
        material_id = await conn.fetchval(
            "INSERT INTO materials (sku, name, unit, balance) VALUES ($1, $2, $3, $4) RETURNING id",
            sku,
            name,
            unit,
            received - issued + drift,
        )
        await conn.execute(
            "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key, "
            "note) VALUES ($1, 'receipt', $2, $3, 'demo receipt')",
            material_id,
            received,
            f"demo:receipt:{sku}",
        )
        await conn.execute(
            "INSERT INTO inventory_transactions (material_id, kind, quantity, request_id, "
            "idempotency_key, note) VALUES ($1, 'issue', $2, $3, $4, 'demo issue')",
            material_id,
            -issued,
            issued_for,
            f"demo:issue:{sku}",
        )


async def _seed_notifications(conn: AnyConnection, *, client_id: int, request_id: int) -> None:
    """``DEMO_NOTIFICATIONS``: to the client ``client_id`` (the third demo user) about
    ``request_id``; a retrying one with its waiting retry-queue entry."""
    for index, (status, attempts, error) in enumerate(DEMO_NOTIFICATIONS):
        notification_id = await conn.fetchval(
            """
            INSERT INTO pending_notifications (idempotency_key, recipient_id, chat_id,
                template_key, params, status, attempts, next_attempt_at, last_error,
                dead_reason, request_id)
            VALUES ($1, $2, $3, 'request.status_changed', $4::jsonb, $5, $6,
                    now() + interval '1 hour', $7, $8, $9)
            RETURNING id
            """,
            f"demo:notification:{index}",
            client_id,
            DEMO_TELEGRAM_ID_BASE + 3,
            {"request_id": request_id, "state": "review"},
            status,
            attempts,
            error,
            "max attempts" if status == "dead" else None,
            request_id,
        )
        if status == "retrying":  # a retrying row has its one waiting retry-queue entry
            await conn.execute(
                "INSERT INTO notification_retry_queue (notification_id, attempt, error_category, "
                "error_message, retry_at) VALUES ($1, $2, 'transient', $3, "
                "now() + interval '1 hour')",
                notification_id,
                attempts,
                error,
            )
