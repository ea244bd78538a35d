"""The SQLite broker's tables: created from ``_schema.sql`` and versioned with ``PRAGMA user_version``."""

from __future__ import annotations

import importlib.resources
import sqlite3
from collections.abc import Callable

from ...errors import BrokerError

__all__ = ["SCHEMA_VERSION", "broker_schema"]

#: The schema version this module creates and understands (stored in ``PRAGMA user_version``).
SCHEMA_VERSION = 1


def broker_schema(path: str) -> Callable[[sqlite3.Connection], None]:
    """What :class:`~greenroom._sqlite.Database` runs on the first connection to the broker's file at ``path``."""

    def install(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BrokerError(f"{path!r} has schema version {version}; this greenroom knows {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            # The script is idempotent and runs in one BEGIN IMMEDIATE transaction, so processes
            # starting together on a new file cannot trip over each other.
            script = importlib.resources.files(__package__ or "greenroom.brokers.sqlite").joinpath("_schema.sql")
            conn.executescript(script.read_text("utf-8"))

    return install
