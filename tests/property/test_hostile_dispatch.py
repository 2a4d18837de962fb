"""Property-based test (hypothesis): hostile updates through the real dispatcher.

Updates of every kind the bot subscribes to (``message`` and ``callback_query``, as
``Dispatcher.resolve_used_update_types`` says), plus edited messages, channel posts and kinds
the bot does not know, with hostile field values: any Unicode, blanks only, NUL, 0-length and
4,096-character texts, ``<`` and ``&`` in every name, forged and random callback data (the
bot's own prefixes with foreign, stale, huge and Unicode-digit ids), senders that are bots,
ids of other users' requests. They go through ``bot.app.build_dispatcher`` (every router and
middleware) on a real PostgreSQL and the Bot API session double, which refuses what Telegram
refuses (malformed HTML, over-long texts, callback data over 64 bytes).

Properties, after every update:

- no exception escapes the dispatcher;
- every callback query is answered exactly once;
- no ERROR log line from the error path itself, and no error recorded as a system error
  (hostile input is the user's mistake, never a crash);
- every message the double received is valid for Telegram (nothing refused);
- a non-admin changes no table beyond what the workflow allows them: their own ``users``
  row, a request they open, one step of a request they may act on
  (``recovery.state_manager.may_act``) with its transition and notifications, a material use
  for such a request; never an admin table.

Bounded for CI: 60 examples of at most four flows each (a single update, or a sequence
such as /new, its button and a description), on one database.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.callbacks import (
    ActionCode,
    AdvanceCb,
    AlertMuteCb,
    DiscrepancyCb,
    ErrorGroupCb,
    ErrorsCb,
    HistoryCb,
    InventoryCb,
    LanguageCb,
    MenuCb,
    NewRequestCb,
    NotificationCb,
    RetriesCb,
    RetryListCb,
    StuckActionCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckDetailCb,
    StuckListCb,
)
from recovery import workflow_definitions as wf
from tests.botstack import BotStack, make_stack, tg_user
from tests.factories import make_material, make_request, make_user

ADMIN_TG = 555_000_777
CLIENT_TG, OTHER_CLIENT_TG, MANAGER_TG, TECHNICIAN_TG = 7_001, 7_002, 7_003, 7_004
KNOWN_SENDERS = [CLIENT_TG, OTHER_CLIENT_TG, MANAGER_TG, TECHNICIAN_TG, ADMIN_TG]
ADMIN_TABLES = (
    "admin_audit_log",
    "workflow_recovery_log",
    "inventory_discrepancies",
    "inventory_reconciliation_log",
    "admin_alert_mutes",
)
_n = itertools.count(1)

# --- strategies -----------------------------------------------------------------------------
HOSTILE_NAMES = ["Anna <3", "<b>Boris", "Tom & Jerry", "</i>", '<a href="x">', "&lt;", "\u00a0"]
names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(min_size=1, max_size=64))
languages = st.one_of(
    st.sampled_from(["en", "ru", "uz", "de", "zh-hans"]), st.none(), st.text(max_size=8)
)
COMMANDS = ["/start", "/help", "/new", "/my", "/tasks", "/language", "/workflow_recovery", "/use"]
texts = st.one_of(
    st.sampled_from(["", " ", "\u00a0", "\n \n", "\x00", "x" * 4096, "<b>", "&", "/"]),
    st.text(max_size=200),
    st.builds(lambda c, rest: f"{c} {rest}", st.sampled_from(COMMANDS), st.text(max_size=40)),
    st.builds(
        lambda ids: "/use " + " ".join(ids),
        st.lists(
            st.sampled_from(["1", "2", "²", "١", "0", "-1", "99999999999999999999", "3"]),
            max_size=4,
        ),
    ),
)
ids = st.one_of(st.integers(1, 12), st.integers(-5, 2**63 - 1))
small = st.integers(0, 8)
callback_data = st.one_of(
    st.builds(
        lambda i, v: AdvanceCb(request_id=i, version=v).pack(),
        st.integers(1, 12),
        st.integers(1, 6),
    ),
    st.builds(
        lambda i, v: f"adv:{i}:{v}", st.sampled_from(["²", "١٢", "-3", "9" * 25, "", "1"]), small
    ),
    st.builds(lambda c: LanguageCb(code=c).pack(), st.sampled_from(["en", "ru", "uz", "xx"])),
    st.builds(
        lambda w: NewRequestCb(workflow_type=w).pack(), st.sampled_from([*wf.WORKFLOWS, "teleport"])
    ),
    st.builds(
        lambda s: MenuCb(section=s).pack(),
        st.sampled_from(["main", "health", "inventory", "errors", "retries", "history", "nope"]),
    ),
    st.builds(lambda i: StuckDetailCb(request_id=i).pack(), st.integers(1, 12)),
    st.builds(
        lambda a, i, v, s: StuckActionCb(action=a, request_id=i, version=v, step=s).pack(),
        st.sampled_from(list(ActionCode)),
        st.integers(1, 12),
        st.integers(1, 6),
        st.integers(0, 2),
    ),
    st.builds(lambda: StuckListCb().pack()),
    st.builds(lambda: StuckBatchCb(action=ActionCode.FORCE).pack()),
    st.builds(
        lambda t: StuckBatchRunCb(token=t, step=2).pack(), st.sampled_from(["deadbeef", "00000000"])
    ),
    st.builds(
        lambda a, i: NotificationCb(action=a, notification_id=i).pack(),
        st.sampled_from(["show", "retry", "retry_ok", "discard_ok"]),
        ids,
    ),
    st.builds(
        lambda a, i: DiscrepancyCb(action=a, discrepancy_id=i).pack(),
        st.sampled_from(["show", "fix", "fix_ok", "accept"]),
        ids,
    ),
    st.builds(lambda a: InventoryCb(action=a).pack(), st.sampled_from(["menu", "fixall", "nope"])),
    st.builds(
        lambda a: RetriesCb(action=a).pack(), st.sampled_from(["menu", "retry_all", "retry_all_ok"])
    ),
    st.builds(lambda p: RetryListCb(page=p).pack(), small),
    st.builds(lambda i: ErrorGroupCb(record_id=i).pack(), ids),
    st.builds(lambda v: ErrorsCb(view=v).pack(), st.sampled_from(["stats", "top", "lookup", "x"])),
    st.builds(lambda p: HistoryCb(page=p).pack(), small),
    st.builds(
        lambda k, s: AlertMuteCb(kind=k, seconds=s).pack(),
        st.sampled_from(["error", "x"]),
        st.sampled_from([3600, 5]),
    ),
    st.text(max_size=64),
    st.none(),
)


@dataclass(frozen=True)
class Sender:
    telegram_id: int
    first_name: str
    language: str | None
    is_bot: bool


senders = st.builds(
    Sender,
    telegram_id=st.one_of(st.sampled_from(KNOWN_SENDERS), st.integers(8_000_000, 8_000_050)),
    first_name=names,
    language=languages,
    is_bot=st.sampled_from([False] * 9 + [True]),
)


@dataclass(frozen=True)
class Event:
    kind: str  # message, edited_message, callback_query, channel_post, unknown
    sender: Sender
    text: str | None = None
    data: str | None = None


def _flow(sender: Sender, *steps: tuple[str, str | None]) -> list[Event]:
    """Several updates of one sender: ("message", text) or ("callback_query", data)."""
    return [
        Event(
            kind,
            sender,
            text=value if kind != "callback_query" else None,
            data=value if kind == "callback_query" else None,
        )
        for kind, value in steps
    ]


single = st.builds(
    lambda kind, sender, text, data: [Event(kind, sender, text, data)],
    st.sampled_from(
        ["message"] * 4 + ["callback_query"] * 4 + ["edited_message", "channel_post", "unknown"]
    ),
    senders,
    st.one_of(texts, st.none()),
    callback_data,
)
greeting = st.builds(
    lambda sender, command: _flow(sender, ("message", command)),
    senders,
    st.sampled_from(["/start", "/help", "/my", "/tasks", "/language", "/workflow_recovery"]),
)
new_request = st.builds(
    lambda sender, kind, description: _flow(
        sender,
        ("message", "/new"),
        ("callback_query", NewRequestCb(workflow_type=kind).pack()),
        ("message", description),
    ),
    senders,
    st.sampled_from([*wf.WORKFLOWS, "teleport"]),
    texts,
)
# other users' requests (ids 1..10 are seeded), current and stale versions
advance = st.builds(
    lambda sender, request_id, version: _flow(
        sender,
        ("message", "/tasks"),
        ("callback_query", AdvanceCb(request_id=request_id, version=version).pack()),
    ),
    senders,
    st.integers(1, 12),
    st.integers(1, 3),
)
use = st.builds(
    lambda sender, request_id, material, quantity: _flow(
        sender, ("message", f"/use {request_id} {material} {quantity}")
    ),
    senders,
    st.integers(1, 12),
    st.integers(1, 3),
    st.sampled_from([1, 2, 3, 100]),
)
admin_screens = st.builds(
    lambda name, datas: _flow(
        Sender(ADMIN_TG, name, "en", False),
        ("message", "/workflow_recovery"),
        *[("callback_query", data) for data in datas],
    ),
    names,
    st.lists(callback_data, min_size=1, max_size=4),
)
flows = st.one_of(single, single, greeting, new_request, advance, advance, use, admin_screens)


def build_update(stack: BotStack, event: Event) -> dict[str, Any]:
    sender = event.sender
    user = tg_user(
        sender.telegram_id,
        first_name=sender.first_name,
        language=sender.language,
        is_bot=sender.is_bot,
    )
    chat = {"id": sender.telegram_id, "type": "private", "first_name": sender.first_name}
    n = next(_n)
    message: dict[str, Any] = {
        "message_id": n,
        "date": int(time.time()),
        "chat": chat,
        "from": user,
    }
    if event.text is not None:
        message["text"] = event.text
    if event.kind in ("message", "edited_message"):
        if event.kind == "edited_message":
            message["edit_date"] = int(time.time())
        return {event.kind: message}
    if event.kind == "channel_post":
        post = {**message, "chat": {"id": -100_123, "type": "channel", "title": sender.first_name}}
        post.pop("from")
        return {"channel_post": post}
    if event.kind == "unknown":
        return {"business_future_kind": {"id": n, "from": user}}
    query: dict[str, Any] = {
        "id": f"q{n}",
        "from": user,
        "chat_instance": "1",
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": chat,
            "from": tg_user(123456789, first_name="Bot", is_bot=True),
            "text": "menu",
        },
    }
    if event.data is not None:
        query["data"] = event.data
    return {"callback_query": query}


# --- the world and its snapshot ---------------------------------------------------------
_stacks: dict[int, BotStack] = {}


async def world(pool: asyncpg.Pool) -> BotStack:
    """One dispatcher and one seeded database for all examples."""
    if id(pool) in _stacks:
        return _stacks[id(pool)]
    client = await make_user(pool, role="client", telegram_id=CLIENT_TG, name="Client <1>")
    other = await make_user(pool, role="client", telegram_id=OTHER_CLIENT_TG, name="&Other")
    manager = await make_user(pool, role="manager", telegram_id=MANAGER_TG, name="<b>Man")
    technician = await make_user(pool, role="technician", telegram_id=TECHNICIAN_TG)
    await make_user(pool, role="admin", telegram_id=ADMIN_TG, name="Admin </i>")
    await make_material(pool, sku="<cable & co>", balance=50)
    await make_material(pool, sku="pipe", balance=2)
    for owner in (client, other):
        await make_request(pool, client_id=owner["id"], state="new", role="manager")
        await make_request(
            pool, client_id=owner["id"], state="new", role="manager", assignee_id=manager["id"]
        )
        await make_request(
            pool,
            client_id=owner["id"],
            state="in_work",
            role="technician",
            workflow_type="connection",
            hours_in_state=48,
        )
        await make_request(
            pool,
            client_id=owner["id"],
            state="in_work",
            role="technician",
            workflow_type="connection",
            assignee_id=technician["id"],
        )
        await make_request(
            pool, client_id=owner["id"], state="completed", role=None, status="completed"
        )
    await pool.execute(
        "UPDATE service_requests SET description = '<script>alert(1)</script> & more'"
    )
    stack = make_stack(pool, admin_ids=[ADMIN_TG])
    _stacks[id(pool)] = stack
    return stack


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    return {
        "requests": {
            r["id"]: dict(r)
            for r in await pool.fetch(
                "SELECT id, client_id, workflow_type, current_state, owner_role, assignee_id, "
                "status, version FROM service_requests"
            )
        },
        "transitions": {
            r["id"]: dict(r)
            for r in await pool.fetch(
                "SELECT id, request_id, actor_id, kind, from_state, to_state "
                "FROM workflow_transitions"
            )
        },
        "ledger": {
            r["id"]: dict(r)
            for r in await pool.fetch(
                "SELECT id, request_id, actor_id, kind, quantity, material_id "
                "FROM inventory_transactions"
            )
        },
        "materials": {r["id"]: r["balance"] for r in await pool.fetch("SELECT * FROM materials")},
        "users": {
            r["telegram_id"]: dict(r)
            for r in await pool.fetch("SELECT id, telegram_id, role FROM users")
        },
        "outbox": {
            r["id"]: dict(r)
            for r in await pool.fetch(
                "SELECT id, template_key, request_id FROM pending_notifications"
            )
        },
        "admin": {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ADMIN_TABLES},
    }


def may_act(user: dict[str, Any], request: dict[str, Any]) -> bool:
    """The rule of ``recovery.state_manager.may_act`` for a non-admin."""
    return (
        request["status"] == "active"
        and request["owner_role"] == user["role"]
        and request["assignee_id"] in (None, user["id"])
    )


def unallowed_changes(before: dict[str, Any], after: dict[str, Any], telegram_id: int) -> list[str]:
    """What a non-admin sender changed that the workflow does not allow them."""
    problems: list[str] = []
    me = after["users"].get(telegram_id)
    for tg, row in after["users"].items():
        old = before["users"].get(tg)
        if tg != telegram_id and old != row:
            problems.append(f"user {tg} changed by {telegram_id}")
        if tg == telegram_id and old is not None and old["role"] != row["role"]:
            problems.append(f"{telegram_id} changed their own role")
    if after["admin"] != before["admin"]:
        problems.append(f"admin tables changed: {before['admin']} -> {after['admin']}")
    changed: set[int] = set()
    for request_id, row in after["requests"].items():
        old = before["requests"].get(request_id)
        if old is None:
            if me is None or row["client_id"] != me["id"] or row["version"] != 1:
                problems.append(f"request {request_id} opened for someone else")
            changed.add(request_id)
        elif old != row:
            step = wf.next_step(old["workflow_type"], old["current_state"])
            if me is None or not may_act(me, old):
                problems.append(f"request {request_id} moved by {telegram_id}, who may not act")
            elif (
                step is None
                or row["current_state"] != step.state
                or row["version"] != old["version"] + 1
            ):
                problems.append(f"request {request_id} moved other than one step: {old} -> {row}")
            changed.add(request_id)
    for tid, row in after["transitions"].items():
        if tid not in before["transitions"] and (me is None or row["actor_id"] != me["id"]):
            problems.append(f"transition {tid} not by the sender")
    for lid, row in after["ledger"].items():
        if lid in before["ledger"]:
            continue
        request = before["requests"].get(row["request_id"])
        if me is None or row["actor_id"] != me["id"] or row["kind"] != "issue":
            problems.append(f"ledger row {lid} not an issue by the sender")
        elif (
            request is None
            or not may_act(me, request)
            or request["current_state"] not in wf.MATERIAL_STATES
        ):
            problems.append(
                f"ledger row {lid} for request {row['request_id']} not the sender's to use"
            )
    issued: dict[int, int] = {}
    for lid, row in after["ledger"].items():
        if lid not in before["ledger"]:
            issued[row["material_id"]] = issued.get(row["material_id"], 0) + row["quantity"]
    for material_id, balance in after["materials"].items():
        if balance != before["materials"].get(material_id, 0) + issued.get(material_id, 0):
            problems.append(f"material {material_id} balance changed without a ledger row")
    for nid, row in after["outbox"].items():
        if nid in before["outbox"]:
            continue
        if row["template_key"].startswith("request.") and row["request_id"] not in changed:
            problems.append(f"notification {nid} about request {row['request_id']} nobody moved")
    return problems


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(flows, min_size=1, max_size=4))
async def test_hostile_updates_through_the_real_dispatcher(
    pool: asyncpg.Pool, batch: list[list[Event]]
) -> None:
    stack = await world(pool)
    errors = Collect()
    logging.getLogger().addHandler(errors)
    try:
        for event in itertools.chain.from_iterable(batch):
            payload = build_update(stack, event)
            before = await snapshot(pool)
            calls_before, rejected_before = len(stack.session.calls), len(stack.session.rejected)
            await stack.dp.feed_raw_update(stack.bot, {"update_id": next(_n), **payload})
            calls = stack.session.calls[calls_before:]
            if "callback_query" in payload:
                query_id = payload["callback_query"]["id"]
                answered = [
                    c
                    for c in calls
                    if c.__api_method__ == "answerCallbackQuery" and c.callback_query_id == query_id
                ]
                refused = [r for r, _ in stack.session.rejected[rejected_before:]]
                accepted = [c for c in answered if c not in refused]
                assert len(accepted) == 1, f"{event}: answered {len(accepted)} times"
            refusals = [why for _, why in stack.session.rejected[rejected_before:]]
            assert not refusals, f"{event}: Telegram refused: {refusals}"
            assert not errors.records, f"{event}: {[r.getMessage() for r in errors.records]}"
            system = await pool.fetch(
                "SELECT error_type, message, location FROM error_records WHERE category = 'system'"
            )
            assert not system, f"{event}: recorded as system errors: {[dict(r) for r in system]}"
            if event.sender.telegram_id != ADMIN_TG:
                after = await snapshot(pool)
                problems = unallowed_changes(before, after, event.sender.telegram_id)
                assert not problems, f"{event}: {problems}"
    finally:
        logging.getLogger().removeHandler(errors)
