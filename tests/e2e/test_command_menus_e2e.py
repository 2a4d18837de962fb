"""The bot process publishes Telegram's command menus: everyone's commands in English,
Russian and Uzbek (default scope, per language code) without the admin menu; an admin's
chat gets a menu with ``/workflow_recovery``; a user's chat menu follows their role (seen
at /start and, for staff, at start-up) and the language they choose."""

from __future__ import annotations

import asyncio

from database.demo_data import DEMO_TELEGRAM_ID_BASE, DEMO_USERS
from handlers.callbacks import LanguageCb
from tests.e2e.conftest import ADMIN_ID, StartBot, run_cli
from tests.fakes.telegram_api import FakeTelegramAPI

CLIENT_ID = 610_000_001


def _names(commands: list[dict[str, str]]) -> list[str]:
    return [c["command"] for c in commands]


def _chat(chat_id: int) -> dict[str, object]:
    return {"type": "chat", "chat_id": chat_id}


async def test_menus_per_language_and_role(fake_api: FakeTelegramAPI, start_bot: StartBot) -> None:
    fake_api.add_user(ADMIN_ID, "Admin")  # an admin's chat exists: their menu can be set
    await start_bot()
    await fake_api.wait_for(lambda: fake_api.get_commands(_chat(ADMIN_ID)), 20)

    descriptions = {}
    for code in ("", "en", "ru", "uz"):
        commands = fake_api.get_commands(None, code)
        assert _names(commands) == ["start", "new", "my", "language", "help"], code
        descriptions[code] = commands[1]["description"]
    assert descriptions["en"] == descriptions[""] == "Open a service request"
    assert descriptions["ru"] == "Открыть заявку"
    assert descriptions["uz"] == "Ariza ochish"
    assert "workflow_recovery" in _names(fake_api.get_commands(_chat(ADMIN_ID)))
    assert all(call.ok for call in fake_api.calls("setMyCommands"))

    # a client's /start: their chat menu, without the admin menu, in their language
    fake_api.push_message(CLIENT_ID, "/start", first_name="Nodira", language_code="ru")
    await fake_api.wait_for(lambda: fake_api.get_commands(_chat(CLIENT_ID)), 20)
    client_menu = fake_api.get_commands(_chat(CLIENT_ID))
    assert "workflow_recovery" not in _names(client_menu)
    assert client_menu[1]["description"] == "Открыть заявку"

    # the language changes: so does the menu
    fake_api.push_callback(CLIENT_ID, LanguageCb(code="uz").pack(), strict=False)
    await fake_api.wait_for(
        lambda: fake_api.get_commands(_chat(CLIENT_ID))[1]["description"] == "Ariza ochish", 20
    )


async def test_staff_menus_set_at_start_up(
    fake_api: FakeTelegramAPI, start_bot: StartBot, cli_env: dict[str, str]
) -> None:
    """Staff need not send /start again: their chat menus (their role's commands, in their
    language) are set when the bot starts."""
    assert "demo data loaded" in await asyncio.to_thread(run_cli, ["seed-demo"], cli_env)
    fake_api.add_user(ADMIN_ID, "Admin")
    for offset, name, _role, language in DEMO_USERS:  # their chats exist
        fake_api.add_user(DEMO_TELEGRAM_ID_BASE + offset, name, language)
    await start_bot()
    staff = {name: DEMO_TELEGRAM_ID_BASE + offset for offset, name, _r, _l in DEMO_USERS}
    aziz, maria = staff["Aziz Technician"], staff["Maria Manager"]
    await fake_api.wait_for(
        lambda: fake_api.get_commands(_chat(aziz)) and fake_api.get_commands(_chat(maria)), 20
    )
    technician = fake_api.get_commands(_chat(aziz))
    assert _names(technician) == ["start", "new", "my", "tasks", "use", "language", "help"]
    assert technician[1]["description"] == "Ariza ochish"  # Aziz speaks Uzbek
    manager = fake_api.get_commands(_chat(maria))
    assert _names(manager) == ["start", "new", "my", "tasks", "language", "help"]
    assert manager[1]["description"] == "Open a service request"
    clients = [DEMO_TELEGRAM_ID_BASE + o for o, _n, role, _l in DEMO_USERS if role == "client"]
    assert clients and not any(fake_api.get_commands(_chat(c)) for c in clients)
    assert all(call.ok for call in fake_api.calls("setMyCommands"))
