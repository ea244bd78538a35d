"""A private PostgreSQL server for tests that must stop or crash it (never the shared one).

Its data directory is made by ``initdb`` in a temporary directory; it listens on a free port of
127.0.0.1 and on a socket in that directory. The server process is the test's own child: it is
stopped and reaped by :meth:`PostgresServer.stop` and removed by :meth:`PostgresServer.destroy`.
PostgreSQL refuses to run as root, so under root both run as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from greenroom.testing import wait_for
from tests.brokers._redis_server import free_port


def _as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that run a command as ``postgres`` when this process is root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


class PostgresServer:
    """A throwaway PostgreSQL cluster (fsync off: the tests crash the server, never the machine)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="greenroom-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster (raises FileNotFoundError when initdb is not installed)."""
        command = ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]
        subprocess.run(command, check=True, capture_output=True, timeout=120, **_as_server_user())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = [
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"),
            *("-c", f"unix_socket_directories={self.directory}", "-c", "max_connections=60"),
        ]
        self.proc = subprocess.Popen(
            ["postgres", "-D", str(self.data), "-p", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_as_server_user(),
        )
        wait_for(self.accepts_connections, 30, interval_s=0.05)

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: a fast shutdown, or (``crash``) an immediate one, as after a crash."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT if crash else signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)

    def destroy(self) -> None:
        """Stop the server and remove its files."""
        self.stop(crash=True)
        shutil.rmtree(self.directory, ignore_errors=True)
