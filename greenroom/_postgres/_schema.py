"""Creating and upgrading greenroom's tables in one PostgreSQL schema, safely from many processes at once.

The migrations are the numbered ``migrations/NNNN_*.sql`` files of this package, loaded on first
use. :func:`apply_migrations` runs those the schema lacks, in one transaction that first takes an
advisory lock named after the schema: processes that start together wait for the first one, then
find the tables there. The schema's ``schema_version`` table records what was applied.
"""

from __future__ import annotations

import importlib.resources
import re
import threading
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..errors import BrokerError

__all__ = [
    "CHANNEL_PREFIX",
    "DEFAULT_SCHEMA",
    "applied_version",
    "apply_migrations",
    "channel",
    "check_schema_name",
    "known_migrations",
]

#: The schema that holds greenroom's tables unless another is chosen.
DEFAULT_SCHEMA = "greenroom"
#: Schema names greenroom accepts: lower-case identifiers, written into SQL inside double quotes.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: The first key of the advisory lock taken while migrating (the second is the schema's hash):
#: "gr" in ASCII, a constant no other program is likely to use.
_LOCK_CLASS = 0x6772
#: Notifications of new rows go to the channel "greenroom:<schema>" (see ``notify_inserted``).
CHANNEL_PREFIX = "greenroom:"

_loaded: list[tuple[int, str]] = []
_load_lock = threading.Lock()


def check_schema_name(schema: str) -> str:
    """``schema`` itself, once it is known to be a plain lower-case identifier.

    Raises:
      ValueError: For any other name.
    """
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema must be a lower-case identifier of at most 63 characters, not {schema!r}")
    return schema


def channel(schema: str) -> str:
    """The ``LISTEN`` channel of a schema's broker."""
    return CHANNEL_PREFIX + schema


def known_migrations() -> list[tuple[int, str]]:
    """``(version, SQL script)`` of every migration this greenroom ships, in order (read once)."""
    with _load_lock:
        if not _loaded:
            folder = importlib.resources.files(__package__ or "greenroom._postgres").joinpath("migrations")
            for entry in sorted(folder.iterdir(), key=lambda item: item.name):
                if entry.name.endswith(".sql"):
                    _loaded.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
        return list(_loaded)


def applied_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The version of the schema's tables; 0 when they do not exist. ``conn`` must be in autocommit mode."""
    try:
        row = conn.execute(f'SELECT max(version) FROM "{check_schema_name(schema)}".schema_version').fetchone()
    except pg_errors.UndefinedTable:
        return 0
    return 0 if row is None or row[0] is None else int(row[0])


def apply_migrations(conn: psycopg.Connection[Any], schema: str) -> int:
    """Create or upgrade the schema's tables to the newest version this greenroom knows; returns it.

    Runs in one transaction on ``conn`` (in autocommit mode), under the schema's advisory lock.

    Raises:
      BrokerError: When the schema was migrated by a newer greenroom than this one.
      psycopg.Error: When the server refuses (no right to create the schema, say).
    """
    name = check_schema_name(schema)
    migrations = known_migrations()
    latest = migrations[-1][0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, name))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{name}".schema_version'
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute(f'SELECT COALESCE(max(version), 0) FROM "{name}".schema_version').fetchone()
        current = int(row[0]) if row is not None else 0
        if current > latest:
            raise BrokerError(f"schema {name!r} has version {current}; this greenroom knows up to {latest}")
        for version, script in migrations:
            if version > current:
                conn.execute(f'SET LOCAL search_path TO "{name}"')
                conn.execute(script.encode())  # no parameters: several statements in one go
                conn.execute(f'INSERT INTO "{name}".schema_version (version) VALUES (%s)', (version,))
    return latest
