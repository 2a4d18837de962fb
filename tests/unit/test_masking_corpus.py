"""``mask_sensitive`` over the outside corpus (``tests/masking_corpus.py``): every sensitive
value is masked, every look-alike comes out unchanged. The same corpus goes through a real
failing path into ``error_records``, the log and a Sentry event in
``tests/integration/test_masking_paths.py``."""

from __future__ import annotations

import re

import pytest

from recovery.masking import _iban_ok, _luhn_ok, mask_sensitive
from tests.masking_corpus import CARDS, IBANS, LOOKALIKES, SENSITIVE, digits, leaks


def test_the_corpus_has_at_least_100_sensitive_strings_and_40_lookalikes() -> None:
    assert len(SENSITIVE) >= 100
    assert len(LOOKALIKES) >= 40
    assert {item.kind for item in SENSITIVE} == {
        "phone", "card", "iban", "email", "passport", "pinfl", "secret"
    }  # fmt: skip


def test_the_corpus_cards_and_ibans_are_valid_numbers() -> None:
    """A corpus card that fails Luhn (or an IBAN that fails mod 97) would test nothing."""
    assert all(_luhn_ok(digits(item.secrets[0])) for item in CARDS)
    for item in IBANS:
        candidates = [
            m.replace(" ", "") for m in re.findall(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", item.text)
        ]
        assert any(
            _iban_ok(c[:n]) and c[:n].endswith(item.secrets[0])
            for c in candidates
            for n in range(15, len(c) + 1)
        ), item.text


@pytest.mark.parametrize("item", SENSITIVE, ids=[f"{i.kind}:{i.text[:40]}" for i in SENSITIVE])
def test_every_sensitive_value_is_masked(item) -> None:  # type: ignore[no-untyped-def]
    masked = mask_sensitive(item.text)
    assert "***" in masked
    leaked = [secret for secret in item.secrets if leaks(masked, secret)]
    assert not leaked, f"{item.text!r} -> {masked!r}"


@pytest.mark.parametrize("text", LOOKALIKES)
def test_every_lookalike_is_left_alone(text: str) -> None:
    assert mask_sensitive(text) == text


def test_masking_is_idempotent_over_the_corpus() -> None:
    """Masking an already masked text changes nothing more (records are masked once by
    the error handler and again by the log filter)."""
    for item in SENSITIVE:
        once = mask_sensitive(item.text)
        assert mask_sensitive(once) == once, item.text
