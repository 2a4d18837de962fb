"""Shared helpers of the cost-floor benchmarks (``bench_dispatch``, ``bench_outbox``,
``bench_startup``): which code is measured, a scratch database, counting round trips and
commits, interleaved rounds and medians.

``--code DIR`` (or ``BENCH_CODE``) imports the project from another checkout, e.g. an
export of ``main`` (``git archive main | tar -x -C /tmp/main-code``), so that "before" and
"after" run the same benchmark script; the default is this checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def code_dir(argv: list[str] | None = None) -> Path:
    """The project checkout to import (``--code DIR`` or ``BENCH_CODE``; default: this
    one), put first on ``sys.path``. Call before importing the project."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--code", default=os.environ.get("BENCH_CODE") or str(ROOT))
    known, _ = parser.parse_known_args(argv)
    path = Path(known.code).resolve()
    sys.path.insert(0, str(path))
    return path


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--code`` and ``--rounds`` (at least 5)."""
    parser.add_argument("--code", default=os.environ.get("BENCH_CODE") or str(ROOT),
                        help="project checkout to measure (default: this one)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (>= 5)")


def code_label(path: Path) -> str:
    """``this checkout @ <commit>`` or the directory's name."""
    if path == ROOT:
        with contextlib.suppress(Exception):
            commit = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            dirty = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            return f"this checkout @ {commit}{' (uncommitted changes)' if dirty else ''}"
    return str(path)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def server_dsn() -> str:
    """``BENCH_DATABASE_URL`` or the local server."""
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER)


@contextlib.contextmanager
def server_or_embedded() -> Iterator[str]:
    """``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL``; else a PostgreSQL of its own
    (pgserver's binaries, the project's embedded default) in a temporary directory, stopped
    and removed afterwards."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import shutil
    import tempfile

    import pgserver

    directory = Path(tempfile.mkdtemp(prefix="pgb"))
    server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database (migrated to head with ``migrate``), dropped afterwards."""
    import psycopg

    server = server_dsn()
    name = f"{prefix}_{os.getpid()}"

    def admin(sql: str) -> None:
        with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        if migrate:
            from database.migrate import upgrade_to_head

            upgrade_to_head(url)
        yield url
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RoundTrips:
    """Counts the statements every asyncpg connection of this process sends (each is at
    least one round trip: queries, BEGIN/COMMIT, the pool's reset on release), through
    asyncpg's query loggers; ``prepared`` counts statement preparations on a cache miss
    (extra round trips). Use ``counting()`` around the measured work."""

    def __init__(self) -> None:
        self.statements = 0
        self.by_text: dict[str, int] = {}
        self._on = False

    def install(self) -> None:
        """Attach a query logger to every connection opened from now on."""
        import asyncpg.connection

        original = asyncpg.connection.Connection.__init__
        counter = self

        def init(conn: Any, *args: Any, **kwargs: Any) -> None:
            original(conn, *args, **kwargs)
            conn.add_query_logger(counter._log)

        asyncpg.connection.Connection.__init__ = init  # type: ignore[method-assign]

    def _log(self, record: Any) -> None:
        if self._on:
            self.statements += 1
            key = " ".join(record.query.split())[:60]
            self.by_text[key] = self.by_text.get(key, 0) + 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count statements logged inside the block (loggers run soon after each query)."""
        self.statements = 0
        self.by_text = {}
        self._on = True
        try:
            yield
        finally:
            self._on = False


async def settle() -> None:
    """Let query loggers scheduled with ``call_soon`` run."""
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


async def commits(conn: Any) -> int:
    """Transactions committed so far in the current database (``pg_stat_database``)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    )


@dataclass
class Series:
    """Values of one measurement over the rounds."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def interleave(rounds: int, variants: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(round, variants in this round's order): the order rotates every round, so no
    variant always runs first or right after another."""
    for round_no in range(rounds):
        shift = round_no % len(variants)
        yield round_no, variants[shift:] + variants[:shift]


def machine_line() -> str:
    """One line about the machine and the load at the start."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores shared with other work (load average "
        f"{os.getloadavg()[0]:.1f}); Python {platform.python_version()}"
    )


def fmt(value: float) -> str:
    """Thousands separated above 100, one decimal below."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}" if value < 1 else f"{value:.1f}"


def results_suffix(code: Path) -> str:
    """``""`` for this checkout, ``-<dir name>`` for another (results side by side)."""
    return "" if code == ROOT else f"-{code.name}"


def write_results(name: str, text: str, suffix: str = "") -> Path:
    """Print ``text`` and write it to ``bench/results/<name><suffix>.md``."""
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{suffix}.md"
    path.write_text(text)
    print(f"written to {path.relative_to(ROOT)}")
    return path


def timed(func: Callable[[], Any]) -> float:
    """Seconds ``func()`` takes."""
    started = time.perf_counter()
    func()
    return time.perf_counter() - started
