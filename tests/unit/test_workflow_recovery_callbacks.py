"""Callback data of the stuck-workflow section: within Telegram's 64-byte limit in the worst
case (https://core.telegram.org/bots/api#inlinekeyboardbutton: callback_data 1-64 bytes),
ids and codes only, and a layout change is detected instead of misread."""

from __future__ import annotations

import pytest
from aiogram.filters.callback_data import CallbackData

from handlers.admin.stuck_views import ACTION_OF
from handlers.callbacks import (
    ADMIN_MENU_PREFIX,
    ActionCode,
    StuckActionCb,
    StuckAssigneesCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckDetailCb,
    StuckFilterCb,
    StuckHistoryCb,
    StuckListCb,
)
from handlers.fallback import is_admin_menu_data
from recovery import workflow_definitions as wf
from recovery.workflows import RecoveryAction

BIGINT = 2**63 - 1  # the largest id PostgreSQL BIGINT holds
INT = 2**31 - 1  # the largest version INTEGER holds
LONGEST_TYPE = max(wf.WORKFLOWS, key=len)
LONGEST_STATE = max((s.state for steps in wf.WORKFLOWS.values() for s in steps), key=len)

WORST: list[CallbackData] = [
    StuckListCb(page=99_999, wf=LONGEST_TYPE, st=LONGEST_STATE),
    StuckFilterCb(wf=LONGEST_TYPE),
    StuckDetailCb(request_id=BIGINT, page=99_999, wf=LONGEST_TYPE, st=LONGEST_STATE),
    *[
        StuckActionCb(action=code, request_id=BIGINT, version=INT, arg=BIGINT, step=2)
        for code in ActionCode
    ],
    StuckAssigneesCb(request_id=BIGINT, version=INT, page=99_999),
    StuckHistoryCb(request_id=BIGINT, page=99_999),
    StuckBatchCb(
        wf=LONGEST_TYPE, st=LONGEST_STATE, action=ActionCode.REASSIGN, arg=BIGINT, page=99_999
    ),
    StuckBatchRunCb(token="f" * 8, step=2),
]


@pytest.mark.parametrize("data", WORST, ids=lambda d: type(d).__name__)
def test_worst_case_fits_in_64_bytes_and_round_trips(data: CallbackData) -> None:
    packed = data.pack()
    assert len(packed.encode()) <= 64, packed
    assert type(data).unpack(packed) == data
    assert is_admin_menu_data(packed)
    assert packed.startswith(ADMIN_MENU_PREFIX)


def test_every_action_has_a_code() -> None:
    assert set(ACTION_OF.values()) == set(RecoveryAction)


@pytest.mark.parametrize(
    ("cls", "old"),
    [
        (StuckListCb, "wrs:0"),  # the first layout: page only
        (StuckDetailCb, "wrd:12:0"),
        (StuckActionCb, "wra:force:12:3:1"),  # action names and a confirm flag
        (StuckActionCb, "wra:xx:12:3:0:0"),  # an action code that does not exist
        (StuckActionCb, f"wra:fw:{2**63}:3:0:0"),  # beyond BIGINT: never sent to PostgreSQL
        (StuckActionCb, "wra:fw:12:0:0:0"),  # version 0 does not exist
        (StuckActionCb, "wra:fw:12:3:0:3"),  # no such step
        (StuckListCb, "wrs:-1::"),
        (StuckBatchRunCb, "wrx:../etc:2"),
    ],
)
def test_an_older_layout_does_not_unpack(cls: type[CallbackData], old: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        cls.unpack(old)


def test_other_menus_are_not_admin_menu_data() -> None:
    assert not is_admin_menu_data("adv:1:2")
    assert not is_admin_menu_data("lang:en")
    assert not is_admin_menu_data(None)
