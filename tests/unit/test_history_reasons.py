"""The recovery history says why an action was refused or failed in words, never as a code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.i18n import create_i18n
from handlers.admin.history import why_label
from recovery.workflows.codes import failure_code


@pytest.fixture
def russian() -> Iterator[None]:
    i18n = create_i18n()
    with i18n.context(), i18n.use_locale("ru"):
        yield


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("in_doubt: TransactionInDoubtError", "результат не удалось подтвердить; проверьте заявку"),
        (
            "unavailable: ConnectionDoesNotExistError 08006",
            "база данных была недоступна; ничего не изменено",
        ),
        ("error: UniqueViolationError 23505", "ошибка базы данных"),
    ],
)
def test_every_failure_code_reads_as_words(russian: None, stored: str, reason: str) -> None:
    assert why_label(stored) == reason


def test_an_unknown_code_is_never_shown_raw(russian: None) -> None:
    assert why_label("something_new: detail") == why_label("refused: x")
    assert "something_new" not in why_label("something_new: detail")
    assert why_label(None) == why_label("refused")


def test_the_core_gives_a_code_for_any_failure() -> None:
    assert failure_code(RuntimeError("boom")) == "error"
