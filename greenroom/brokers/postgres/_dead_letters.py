"""The operations on the Postgres broker's dead letters an operator asks for: is a queue known, requeue, purge."""

from __future__ import annotations

from typing import Any

import psycopg

from ..._operations import requeue_payload
from ..._postgres import NOW_MS, Database
from ...common import dq_name, q_name

__all__ = ["DeadLetterTable"]

#: Dead letters moved per transaction.
_CHUNK = 1000

_KNOWN = """
SELECT EXISTS (SELECT 1 FROM {s}.messages WHERE queue_name = ANY(%s))
    OR EXISTS (SELECT 1 FROM {s}.dead_letters WHERE queue_name = %s)
"""
_LAST_ID = "SELECT COALESCE(max(id), 0) FROM {s}.dead_letters WHERE queue_name = %s"
# SKIP LOCKED: two operators requeueing at once each move other letters, never one twice.
_TAKE = """
DELETE FROM {s}.dead_letters WHERE id IN (
    SELECT id FROM {s}.dead_letters
    WHERE queue_name = %s AND id <= %s AND (%s::text[] IS NULL OR message_id = ANY(%s::text[]))
    ORDER BY id LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, payload
"""
_INSERT = "INSERT INTO {s}.messages (queue_name, payload, message_id) SELECT %s, p, NULL FROM unnest(%b::bytea[]) AS p"
_PURGE = "DELETE FROM {s}.dead_letters WHERE queue_name = %s AND dead_at_ms <= {now} - %s"


class DeadLetterTable:
    """Requeues and purges a schema's dead letters, each move in one transaction (none lost or doubled).

    Parameters:
      db: The broker's connections.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

        def sql(template: str) -> str:
            return template.format(s=f'"{db.schema}"', now=NOW_MS).strip()

        self._known = sql(_KNOWN)
        self._last_id = sql(_LAST_ID)
        self._take = sql(_TAKE)
        self._insert = sql(_INSERT)
        self._purge = sql(_PURGE)

    def knows(self, queue_name: str) -> bool:
        """Whether the schema holds messages or dead letters of a queue."""
        name = q_name(queue_name)
        row = self.db.run(lambda conn: conn.execute(self._known, ([name, dq_name(name)], name)).fetchone())
        return bool(row and row[0])

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None) -> int:
        """Move the dead letters of a queue (those of ``message_ids``, or all) back to it; how many moved.

        Only those dead when the call began: a message that dies again meanwhile stays dead.
        """
        name = q_name(queue_name)
        ids = None if message_ids is None else sorted(message_ids)
        last_row = self.db.run(lambda conn: conn.execute(self._last_id, (name,)).fetchone())
        last_id = int(last_row[0]) if last_row else 0

        def move_chunk(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                taken = conn.execute(self._take, (name, last_id, ids, ids, _CHUNK)).fetchall()
                payloads = [requeue_payload(bytes(row[1]), name) for row in sorted(taken)]
                if payloads:
                    conn.execute(self._insert, (name, payloads))
                return len(payloads)

        moved = 0
        while True:
            count = self.db.run(move_chunk, durable=True)
            moved += count
            if count < _CHUNK:
                return moved

    def purge(self, queue_name: str, older_than_ms: int) -> int:
        """Delete the dead letters of a queue dead at least ``older_than_ms`` ago (server clock); how many."""
        params = (q_name(queue_name), older_than_ms)
        deleted: int = self.db.run(lambda conn: conn.execute(self._purge, params).rowcount)
        return deleted
