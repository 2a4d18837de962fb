"""A PostgreSQL server of one test alone, to stop with an immediate shutdown and start again
on the same port (the database kept on disk in between).

The binaries are pgserver's bundled ones when the package is installed, else the machine's
(``pg_ctl`` on PATH). PostgreSQL refuses to run as root: as root the server runs as the
``pgserver`` or ``postgres`` system user (whichever exists), through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin_dir() -> Path:
    try:
        import pgserver
    except ImportError:
        found = shutil.which("pg_ctl")
        if found is None:
            raise AssertionError("neither pgserver nor pg_ctl is installed") from None
        return Path(os.path.realpath(found)).parent
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("pgserver", "postgres"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise AssertionError("running as root without a pgserver or postgres system user")


class PostgresServer:
    """``initdb`` into ``directory`` and a server on a free loopback port, trust auth."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        self.bin = _bin_dir()
        self.user = _system_user()

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """The DSN of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")

    def init(self) -> None:
        """Create the cluster (superuser ``postgres``, trust authentication)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.directory, *self.directory.parents):
                path.chmod(path.stat().st_mode | 0o005)  # traversable by the server's user
                if path == Path(path.anchor):
                    break
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m <mode>``: immediate is a crash for the clients (no goodbye)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        """The server's log so far."""
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""
