"""The operations on the SQLite broker's dead letters: is a queue known, requeue, purge.

Listing and counting stay with the rest of the reads in :class:`~._storage.SQLiteStorage`; this
module holds the writes an operator asks for, each made of short transactions of at most
:data:`_CHUNK` rows, so that workers sharing the file never wait long for the write lock.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..._operations import requeue_payload
from ..._sqlite import Database
from ...common import current_millis, dq_name, q_name

__all__ = ["DeadLetterTable"]

#: Dead letters moved or deleted per transaction (and ids bound per statement: SQLite's historic
#: limit on variables is 999).
_CHUNK = 500

_KNOWN = """
SELECT EXISTS (SELECT 1 FROM greenroom_messages WHERE queue_name IN (?, ?))
    OR EXISTS (SELECT 1 FROM greenroom_dead_letters WHERE queue_name = ?)
"""
_LAST_ID = "SELECT COALESCE(MAX(id), 0) FROM greenroom_dead_letters WHERE queue_name = ?"
_SELECT = "SELECT id, CAST(payload AS BLOB) FROM greenroom_dead_letters"
_FIRST_CHUNK = _SELECT + " WHERE queue_name = ? AND id <= ? ORDER BY id LIMIT ?"
_BY_MESSAGE_ID = _SELECT + " WHERE queue_name = ? AND message_id IN ({}) ORDER BY id"
_INSERT = "INSERT INTO greenroom_messages (queue_name, payload, due_ms) VALUES (?, ?, ?)"
_FORGET = "DELETE FROM greenroom_dead_letters WHERE id = ?"
_PURGE_CHUNK = """
DELETE FROM greenroom_dead_letters WHERE id IN (
    SELECT id FROM greenroom_dead_letters WHERE queue_name = ? AND id <= ? AND dead_at_ms <= ? LIMIT ?
)
"""


class DeadLetterTable:
    """The dead letters of the broker's database file.

    Parameters:
      db: The broker's connection layer.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def knows(self, queue_name: str) -> bool:
        """Whether a queue holds a message (ready, delayed or in progress) or a dead letter."""
        name = q_name(queue_name)
        params = (name, dq_name(name), name)
        return bool(self.db.read(lambda conn: conn.execute(_KNOWN, params).fetchone()[0]))

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None) -> int:
        """Move dead letters back to their queue, due at once; returns how many were moved.

        Each chunk moves in one transaction (the message written, then its dead letter deleted),
        committed as durably as an enqueue. ``None`` moves every dead letter there is when the call
        starts; those that arrive meanwhile stay.
        """
        name = q_name(queue_name)
        moved = 0
        if message_ids is None:
            last_id: int = self.db.read(lambda conn: conn.execute(_LAST_ID, (name,)).fetchone()[0])
            while True:  # each round deletes what it selects: at most (dead letters / _CHUNK) + 1 rounds
                count = self._move(name, _FIRST_CHUNK, (name, last_id, _CHUNK))
                moved += count
                if count < _CHUNK:
                    return moved
        ids = sorted(message_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            moved += self._move(name, _BY_MESSAGE_ID.format(", ".join("?" * len(chunk))), (name, *chunk))
        return moved

    def _move(self, name: str, select: str, params: tuple[Any, ...]) -> int:
        """In one transaction, requeue the dead letters ``select`` finds; returns how many it moved.

        The rows are selected inside the write transaction: a dead letter that another process
        requeued or purged a moment before is not moved twice.
        """

        def operation(conn: sqlite3.Connection) -> int:
            rows: list[tuple[int, bytes]] = conn.execute(select, params).fetchall()
            now_ms = current_millis()
            conn.executemany(_INSERT, [(name, requeue_payload(bytes(payload), name), now_ms) for _, payload in rows])
            conn.executemany(_FORGET, [(row_id,) for row_id, _ in rows])
            return len(rows)

        moved: int = self.db.write(operation, durable=True)
        return moved

    def purge(self, queue_name: str, older_than_ms: int) -> int:
        """Delete the dead letters of a queue dead at least ``older_than_ms`` ago; returns how many.

        Only those there when the call starts: the rounds end, whatever keeps dying meanwhile.
        """
        name = q_name(queue_name)
        dead_by_ms = current_millis() - older_than_ms
        last_id: int = self.db.read(lambda conn: conn.execute(_LAST_ID, (name,)).fetchone()[0])
        params = (name, last_id, dead_by_ms, _CHUNK)
        deleted = 0
        while True:  # each round deletes up to _CHUNK of a set that only shrinks
            count: int = self.db.write(lambda conn: conn.execute(_PURGE_CHUNK, params).rowcount)
            deleted += count
            if count < _CHUNK:
                return deleted
