"""The retry policy: one value object for every retry of the core.

Used by the notification sender (``RETRY_*``: a failed send is due again after the delay;
dead after ``max_attempts``) and, as ``TransactionRetryPolicy``, by the transactional state
manager (``DB_RETRY_*``: the whole transaction is run again by tenacity). Telegram's 429
is not a backoff: it is waited out for exactly its ``retry_after`` (design: Policies).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity.wait import wait_random_exponential


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter (design: Policies / Retries).

    ``delay_s(n) = uniform(0, min(max_delay_s, base_delay_s * 2**n))`` seconds before the
    retry that follows failed attempt number ``n + 1`` (``n`` counts earlier failures, so the
    first retry waits up to ``base_delay_s``). At most ``max_attempts`` attempts, the first
    included. Full jitter: "Exponential Backoff And Jitter", AWS Architecture Blog, 2015.
    Defaults: 5 attempts, base 30 s, cap 1 h (the notification sender's).

    Raises:
        ValueError: on construction, when ``max_attempts < 1``, ``base_delay_s < 0`` or
            ``max_delay_s < base_delay_s``.
    """

    max_attempts: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0:
            raise ValueError("base_delay_s must not be negative")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")

    def cap_s(self, attempt: int) -> float:
        """The upper bound of the jittered delay: ``min(max_delay_s, base * 2**attempt)``."""
        return min(self.max_delay_s, self.base_delay_s * float(2 ** min(max(attempt, 0), 62)))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before the next try after ``attempt`` earlier failures (0-based):
        ``uniform(0, cap_s(attempt))``."""
        return (rng or random).uniform(0, self.cap_s(attempt))

    def wait_strategy(self) -> wait_random_exponential:
        """The same formula as a tenacity wait (its attempt numbers are 1-based: the wait
        after attempt ``k`` is ``delay_s(k - 1)``)."""
        return wait_random_exponential(multiplier=self.base_delay_s, max=self.max_delay_s)


@dataclass(frozen=True, slots=True)
class TransactionRetryPolicy(RetryPolicy):
    """``RetryPolicy`` of a transaction that failed transiently (settings ``DB_RETRY_*``):
    3 attempts, base 0.05 s, cap 1 s by default.

    ``in_doubt_lookups``: after the last attempt failed with its COMMIT outcome unknown, how
    many times (same backoff) ``transaction_log`` is read to settle it before giving up
    with ``TransactionInDoubtError`` (10 lookups take at most about 7 s with the defaults).

    Raises:
        ValueError: as ``RetryPolicy``, or ``in_doubt_lookups < 1``.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    in_doubt_lookups: int = 10

    def __post_init__(self) -> None:
        RetryPolicy.__post_init__(self)
        if self.in_doubt_lookups < 1:
            raise ValueError("in_doubt_lookups must be at least 1")
