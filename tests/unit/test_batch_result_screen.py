"""The batch result screen: the counts, and which requests succeeded, were stale or failed
(with why), in each language; long lists are cut with a count of the rest."""

from __future__ import annotations

import uuid

import pytest

from bot.i18n import create_i18n
from handlers.admin.stuck_batch_views import FAILURES_SHOWN, IDS_SHOWN, batch_result_screen
from recovery.workflows import BatchResult, RecoveryAction

I18N = create_i18n()


def _render(result: BatchResult, locale: str) -> str:
    with I18N.context(), I18N.use_locale(locale):
        text, _markup = batch_result_screen(result)
    return text


def test_the_result_lists_the_request_numbers_of_each_outcome() -> None:
    result = BatchResult(
        uuid.uuid4(),
        RecoveryAction.FORCE,
        requested=6,
        succeeded=[11, 12],
        stale=[13],
        failed=[(14, "unavailable"), (15, "no_history"), (16, "in_doubt")],
    )
    text = _render(result, "en")
    assert "2 succeeded, 1 stale (moved since the review), 3 failed." in text
    assert "Succeeded: #11, #12" in text
    assert "Stale: #13" in text
    assert "#14: database unavailable, nothing changed" in text
    assert "#15: no earlier state" in text
    assert "#16: outcome unknown, applied at most once" in text


@pytest.mark.parametrize(
    ("locale", "phrases"),
    [
        ("ru", ["Успешно: #11", "Устарели: #13", "#14: база данных недоступна"]),
        ("uz", ["Muvaffaqiyatli: #11", "Eskirgan: #13", "#14: maʼlumotlar bazasi mavjud emas"]),
    ],
)
def test_the_result_is_translated(locale: str, phrases: list[str]) -> None:
    result = BatchResult(
        uuid.uuid4(),
        RecoveryAction.RESET,
        requested=3,
        succeeded=[11],
        stale=[13],
        failed=[(14, "unavailable")],
    )
    text = _render(result, locale)
    for phrase in phrases:
        assert phrase in text


def test_long_lists_are_cut_and_counted() -> None:
    many = list(range(1000, 1000 + IDS_SHOWN + 7))
    failed = [(i, "error") for i in range(2000, 2000 + FAILURES_SHOWN + 4)]
    result = BatchResult(
        uuid.uuid4(),
        RecoveryAction.COMPLETE,
        requested=len(many) + len(failed),
        succeeded=many,
        failed=failed,
    )
    text = _render(result, "en")
    assert f"#{many[IDS_SHOWN - 1]} (+7 more)" in text
    assert f"#{many[IDS_SHOWN]}," not in text
    assert f"#{failed[FAILURES_SHOWN - 1][0]}: unexpected error" in text
    assert f"#{failed[FAILURES_SHOWN][0]}, " in text  # the rest by number only
    assert len(text) < 4096  # Telegram's message limit (Bot API sendMessage: 1-4096 chars)
