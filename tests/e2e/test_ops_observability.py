"""What ops read off a running bot: JSON log lines that follow one update (the error
reference a user quotes leads to every line of that update), and every metric that the
alert rules and the dashboard name, scraped from ``/metrics``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from database.pool import create_pool
from tests.e2e.conftest import StartBot
from tests.e2e.instances import FAST_JOBS, eventually, free_port
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"E-[A-Z2-9]{6}")
CLIENT = 610_000_001


def _json_lines(log: str) -> list[dict[str, object]]:
    lines = [line for line in log.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


async def test_an_error_reference_leads_to_every_log_line_of_its_update(
    start_bot: StartBot, fake_api: FakeTelegramAPI, database_url: str
) -> None:
    bot = await start_bot(LOG_FORMAT="json", INSTANCE_ID="bot-json", SCHEDULER_ENABLED="false")
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        fake_api.push_message(CLIENT, "/start")
        await fake_api.wait_for(lambda: fake_api.last_message(CLIENT), 15)
        # a system error on the user's next command: a table is missing
        await db.execute("ALTER TABLE service_requests RENAME TO service_requests_moved")
        failing = fake_api.push_message(CLIENT, "/my")
        reply = await fake_api.wait_for(
            lambda: next((m for m in fake_api.messages_to(CLIENT)
                          if REFERENCE.search(m.get("text", ""))), None), 15,
        )  # fmt: skip
        await db.execute("ALTER TABLE service_requests_moved RENAME TO service_requests")
        # a later update of the same user carries no reference
        later = fake_api.push_message(CLIENT, "/start")
        await eventually(lambda: f'"update_id": {later["update_id"]}' in bot.log(), 15)
    finally:
        await db.close()
    match = REFERENCE.search(reply["text"])
    assert match is not None
    reference = match.group(0)

    lines = _json_lines(bot.log())
    assert all(line["instance"] == "bot-json" for line in lines)
    quoted = [line for line in lines if line.get("error_ref") == reference]
    assert quoted, f"no line carries {reference}"
    # the reference leads to one update of one user ...
    assert {line["update_id"] for line in quoted} == {failing["update_id"]}
    assert {line["user_id"] for line in quoted} == {CLIENT}
    # ... and that update's lines include the error itself, with its masked stack trace
    of_update = [line for line in lines if line.get("update_id") == failing["update_id"]]
    errors = [line for line in of_update if line["level"] == "error"]
    assert any(reference in str(line["message"]) and "UndefinedTable" in str(line.get(
        "exception", "")) for line in errors), of_update  # fmt: skip
    assert all(line["update_type"] == "message" for line in of_update)
    # no other update's line carries the reference, and the bot token is never written
    assert not [line for line in lines if line.get("error_ref") == reference
                and line.get("update_id") != failing["update_id"]]  # fmt: skip
    assert all("error_ref" not in line for line in lines
               if line.get("update_id") == later["update_id"])  # fmt: skip
    assert DEFAULT_TOKEN not in bot.log()


def _names_in_ops_files() -> set[str]:
    """Every bot_* metric an alert rule or a dashboard panel reads."""
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {name for expr in exprs for name in re.findall(r"\bbot_[a-z0-9_]+", expr)}


async def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(
    start_bot: StartBot, fake_api: FakeTelegramAPI
) -> None:
    port = free_port()
    await start_bot(HTTP_IN_POLLING="true", WEB_PORT=str(port), **FAST_JOBS)
    fake_api.push_message(CLIENT, "/start")  # an update: its counters and histogram

    async def scrape() -> set[str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
        exported: set[str] = set()
        for family in text_string_to_metric_families(text):
            # a family without samples yet (labels not used) is still declared
            exported |= {family.name + s for s in ("", "_total", "_bucket", "_sum", "_count")}
            exported |= {sample.name for sample in family.samples}
        return exported

    wanted = _names_in_ops_files()
    assert len(wanted) >= 15
    # the jobs run every second: after a few, every job metric has its labels
    exported = await eventually(
        lambda: _complete(scrape, wanted), 60, "every job metric after a run"
    )
    missing = wanted - exported
    assert not missing, f"named in deploy/ but not exported: {sorted(missing)}"


async def _complete(scrape, wanted: set[str]) -> set[str] | None:  # type: ignore[no-untyped-def]
    exported = await scrape()
    return exported if "bot_job_last_success_timestamp_seconds" in exported else None
