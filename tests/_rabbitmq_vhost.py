"""A RabbitMQ virtual host of this test process's own, so that the tests share the server safely.

Other software on the same server may hold queues the tests also use (a ``default`` queue declared
with ``x-max-priority``, say), and RabbitMQ refuses to redeclare a queue with other arguments. In a
virtual host created for the run nothing else exists. Each test process (each pytest-xdist worker
too) gets its own, created by the session fixture ``rabbitmq_vhost`` and deleted when the session
ends; the virtual hosts of test processes that died without deleting theirs are deleted at the
next creation.

The server is administered with ``rabbitmqctl``, which the RabbitMQ server package installs on the
machine it runs on (the tests' server is on the loopback interface, and the management plugin,
whose HTTP API could do the same remotely, is not necessarily enabled).
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import uuid

__all__ = ["URL", "VHOST", "VhostAdminError", "amqp_url", "create_vhost", "delete_vhost"]

HOST, PORT = "127.0.0.1", 5672
USER, PASSWORD = "guest", "guest"
#: Every virtual host the tests create starts with this, followed by the creating process's id.
PREFIX = "greenroom-test-"
VHOST = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
#: rabbitmqctl answers in well under a second; this only bounds a hung node.
ADMIN_TIMEOUT_S = 60


class VhostAdminError(Exception):
    """``rabbitmqctl`` is missing, or could not administer the server (is it down?)."""


def amqp_url(port: int = PORT, vhost: str = VHOST) -> str:
    """The URL of ``vhost`` through ``port`` (a proxy's, say) on the loopback interface."""
    return f"amqp://{USER}:{PASSWORD}@{HOST}:{port}/{urllib.parse.quote(vhost, safe='')}"


#: The URL every RabbitMQ test connects to (valid once ``create_vhost`` has run).
URL = amqp_url()


def _rabbitmqctl(*args: str) -> str:
    try:
        completed = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=ADMIN_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VhostAdminError(f"rabbitmqctl {args[0]} failed: {exc}") from exc
    if completed.returncode != 0:
        raise VhostAdminError(f"rabbitmqctl {args[0]} failed: {completed.stderr.strip()}")
    return completed.stdout


def _creator_is_gone(vhost: str) -> bool:
    """Whether ``vhost`` is a test virtual host whose creating process no longer runs on this machine."""
    pid_text = vhost.removeprefix(PREFIX).partition("-")[0]
    if not vhost.startswith(PREFIX) or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def create_vhost() -> None:
    """Create :data:`VHOST` with every permission for the test user, and delete orphaned test hosts.

    Raises:
      VhostAdminError: When the server could not be administered.
    """
    names = _rabbitmqctl("list_vhosts", "name", "--no-table-headers").split()
    for orphan in [name for name in names if _creator_is_gone(name)]:
        try:
            _rabbitmqctl("delete_vhost", orphan)
        except VhostAdminError:
            pass  # another test process deleted it first
    _rabbitmqctl("add_vhost", VHOST)
    _rabbitmqctl("set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")


def delete_vhost() -> None:
    """Delete :data:`VHOST` and everything in it (its queues go with it)."""
    _rabbitmqctl("delete_vhost", VHOST)
