"""The SQLite broker's tables: created by ``_schema.sql``, upgraded by ``_schema_2.sql``, versioned with
``PRAGMA user_version``."""

from __future__ import annotations

import importlib.resources
import sqlite3
from collections.abc import Callable

from ...errors import BrokerError

__all__ = ["SCHEMA_VERSION", "broker_schema"]

#: The schema version this module creates and understands (stored in ``PRAGMA user_version``).
SCHEMA_VERSION = 2
#: (version, script) of each step, in order: a file at version n-1 runs the scripts from n on.
_MIGRATIONS = ((1, "_schema.sql"), (2, "_schema_2.sql"))
#: Statements of the scripts that install() issues itself, around all the steps at once.
_TRANSACTION_CONTROL = ("BEGIN IMMEDIATE", "COMMIT")


def _statements(name: str) -> list[str]:
    """The statements of a packaged script: without comment lines, split at semicolons."""
    text = importlib.resources.files(__package__ or "greenroom.brokers.sqlite").joinpath(name).read_text("utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = (statement.strip() for statement in code.split(";"))
    return [statement for statement in statements if statement and statement not in _TRANSACTION_CONTROL]


def broker_schema(path: str) -> Callable[[sqlite3.Connection], None]:
    """What :class:`~greenroom._sqlite.Database` runs on the first connection to the broker's file at ``path``."""

    def version(conn: sqlite3.Connection) -> int:
        found: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise BrokerError(f"{path!r} has schema version {found}; this greenroom knows {SCHEMA_VERSION}")
        return found

    def install(conn: sqlite3.Connection) -> None:
        if version(conn) == SCHEMA_VERSION:
            return
        # One BEGIN IMMEDIATE transaction, and the version read again once it holds the write lock:
        # processes that start together on a new or older file run each step once, in turn.
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = version(conn)
            for number, script in _MIGRATIONS:
                if found < number:
                    for statement in _statements(script):
                        conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    return install
