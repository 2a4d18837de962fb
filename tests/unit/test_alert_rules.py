"""The alert rules in deploy/prometheus are valid and fire as intended on series shaped like a
scrape of the bot (``promtool test rules``, Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus): "
    "the alert rules are not checked",
)


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_rules_are_valid() -> None:
    assert "SUCCESS: 9 rules found" in _promtool("check", "rules", "alerts.yml")


def test_the_rules_fire_on_the_series_of_their_tests() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
