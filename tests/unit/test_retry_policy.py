"""``RetryPolicy``: exponential backoff with full jitter, ``uniform(0, min(cap, base*2**n))``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.notifications import RetryPolicy


def test_the_cap_doubles_per_attempt_until_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=30.0, max_delay_s=3600.0)
    assert [policy.cap_s(n) for n in range(9)] == [
        30.0,
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
    ]
    assert policy.cap_s(10_000) == 3600.0  # no overflow for absurd attempt numbers


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.0, max_value=1000.0),
    extra=st.floats(min_value=0.0, max_value=10_000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_lies_between_zero_and_the_cap(
    attempt: int, base: float, extra: float, seed: int
) -> None:
    policy = RetryPolicy(base_delay_s=base, max_delay_s=base + extra)
    delay = policy.delay_s(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.cap_s(attempt) <= policy.max_delay_s


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    policy = RetryPolicy(base_delay_s=30.0, max_delay_s=3600.0)
    rng = random.Random(1)
    delays = [policy.delay_s(2, rng) for _ in range(2000)]
    cap = policy.cap_s(2)
    assert min(delays) < 0.05 * cap  # not "equal jitter" (which never goes below cap / 2)
    assert max(delays) > 0.95 * cap
    assert len({round(d, 6) for d in delays}) > 1900  # not a fixed schedule


def test_a_seeded_random_source_makes_delays_reproducible() -> None:
    policy = RetryPolicy()
    assert [policy.delay_s(n, random.Random(7)) for n in range(5)] == [
        policy.delay_s(n, random.Random(7)) for n in range(5)
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay_s": -1.0}, "base_delay_s"),
        ({"base_delay_s": 60.0, "max_delay_s": 30.0}, "max_delay_s"),
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
