"""The statements of the Postgres broker, written for one schema (the tables are in ``_postgres/migrations``).

Times compared with leases are the server's (``NOW_MS``), so hosts whose clocks disagree agree on
whose lease ran out; the due time of a delayed message is its ``eta``, from the producer's clock.

Arrays are sent in binary (``%b``, cast to their type so that an empty one has a type too):
psycopg writes the text form of an array element by element in Python, which took half of
enqueue_many's time and a few dozen microseconds of every statement that deleted acked rows.
"""

from __future__ import annotations

from ..._postgres import NOW_MS

__all__ = ["Statements"]

_INSERT = """
INSERT INTO {s}.messages (queue_name, payload, due_ms, message_id)
VALUES (%s, %s, COALESCE(%s::bigint, {now}), %s)
"""
_INSERT_MANY = """
INSERT INTO {s}.messages (queue_name, payload, due_ms, message_id)
SELECT queue_name, payload, COALESCE(due_ms, {now}), message_id
FROM unnest(%b::text[], %b::bytea[], %b::bigint[], %b::text[]) AS batch(queue_name, payload, due_ms, message_id)
"""
# Unique jobs. A retry or a delayed message moved to its queue (the same message id) first finds
# its predecessor, which lets the key go; a key held by another message makes the insert a no-op.
_HAND_ON_KEY = "UPDATE {s}.messages SET unique_held = false WHERE unique_key = %s AND message_id = %s"
_INSERT_UNIQUE = """
INSERT INTO {s}.messages (queue_name, payload, due_ms, message_id, unique_key, unique_held, unique_until_finished)
VALUES (%s, %s, COALESCE(%s::bigint, {now}), %s, %s, %s, %s)
ON CONFLICT (unique_key) WHERE unique_held DO NOTHING
RETURNING id
"""
_KEY_HOLDER = "SELECT payload FROM {s}.messages WHERE unique_key = %s AND unique_held"
# SKIP LOCKED: concurrent consumers each take other rows instead of queueing on the same ones. The
# lock is FOR NO KEY UPDATE, the weakest that an update of non-key columns needs. A lease on a
# queue (not a delay queue) also lets go of the unique key of a message that does not keep it to the end.
# The same round trip deletes the rows the consumer's messages were acknowledged for since its last
# one (a data-modifying WITH runs whether or not it is read); they are kept out of the pick, as a
# statement must not change one row twice.
_LEASE = """
WITH acked AS (DELETE FROM {s}.messages WHERE id = ANY(%(acked)b::bigint[]))
UPDATE {s}.messages AS m
SET lease_owner = %(owner)s,
    lease_until_ms = {now} + %(lease_ms)s,
    unique_held = m.unique_held AND NOT (%(started)s AND NOT m.unique_until_finished)
FROM (
    SELECT id FROM {s}.messages
    WHERE queue_name = %(queue)s AND due_ms <= {now} AND lease_until_ms <= {now}
        AND id <> ALL(%(acked)b::bigint[])
    ORDER BY due_ms, id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
) AS picked
WHERE m.id = picked.id
RETURNING m.id, m.due_ms, m.payload
"""
_NEXT_DUE = """
SELECT due_ms - {now} FROM {s}.messages
WHERE queue_name = %s AND lease_until_ms <= {now}
ORDER BY due_ms, id LIMIT 1
"""
_DELETE = "DELETE FROM {s}.messages WHERE id = ANY(%b::bigint[])"
_BURY = """
WITH buried AS (DELETE FROM {s}.messages WHERE id = %(id)s AND lease_owner = %(owner)s RETURNING payload)
INSERT INTO {s}.dead_letters (queue_name, message_id, payload, reason, dead_at_ms)
SELECT %(queue)s, %(message_id)s, payload, %(reason)s, {now} FROM buried
"""
# Rows handed back wake the consumers of their queue, in this process and in others.
_UNLEASE = """
WITH released AS (
    UPDATE {s}.messages SET lease_owner = NULL, lease_until_ms = 0
    WHERE id = ANY(%b::bigint[]) AND lease_owner = %s
    RETURNING queue_name
)
SELECT pg_notify(%s, queue_name) FROM (SELECT DISTINCT queue_name FROM released) AS queues
"""
# The rows of a dead worker process (owners "<host>:<pid>:<consumer>"): released, their queues woken.
# No index serves it (leases stay HOT updates): it reads the table, which holds the work in flight,
# once per death.
_RELEASE_PROCESS = """
WITH released AS (
    UPDATE {s}.messages SET lease_owner = NULL, lease_until_ms = 0
    WHERE lease_owner IS NOT NULL AND starts_with(lease_owner, %s)
    RETURNING queue_name
), woken AS (
    SELECT pg_notify(%s, queue_name) FROM (SELECT DISTINCT queue_name FROM released) AS queues
)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM woken)
"""
_RENEW = "UPDATE {s}.messages SET lease_until_ms = {now} + %s WHERE id = ANY(%b::bigint[]) AND lease_owner = ANY(%s)"
_PURGE = "DELETE FROM {s}.dead_letters WHERE dead_at_ms < {now} - %s"
# Vacuums of the messages table, one process at a time: a session lock of its own ("gv"), tried.
_TRY_VACUUM_LOCK = "SELECT pg_try_advisory_lock(26486, hashtext(%s))"
_VACUUM_UNLOCK = "SELECT pg_advisory_unlock(26486, hashtext(%s))"
_VACUUM = "VACUUM {s}.messages"
# Rebuilding the indexes (see _compaction.py): their size, whether the table holds only a few rows,
# and the invalid copies a rebuild that gave up left behind (REINDEX CONCURRENTLY names them so),
# of the table's indexes and of its TOAST table's.
_LEFTOVERS = """
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indrelid IN (
        '{s}.messages'::regclass,
        (SELECT reltoastrelid FROM pg_class WHERE oid = '{s}.messages'::regclass))
    AND NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$'
"""
_INDEX_STATE = f"""
SELECT pg_indexes_size('{{s}}.messages'::regclass),
    (SELECT count(*) FROM (SELECT 1 FROM {{s}}.messages LIMIT %s) AS few),
    (SELECT count(*) {_LEFTOVERS})
"""
_LEFTOVER_INDEXES = f"SELECT n.nspname, c.relname {_LEFTOVERS}"
_REINDEX = "REINDEX TABLE CONCURRENTLY {s}.messages"
_FLUSH = "DELETE FROM {s}.messages WHERE queue_name = ANY(%s)"
_FLUSH_DEAD = "DELETE FROM {s}.dead_letters WHERE queue_name = %s"
_HAS_MESSAGES = "SELECT EXISTS (SELECT 1 FROM {s}.messages WHERE queue_name = ANY(%s))"
_COUNTS = """
SELECT queue_name = %s, lease_until_ms > {now}, count(*) FROM {s}.messages
WHERE queue_name = ANY(%s) GROUP BY 1, 2
"""
_DEAD_COUNT = "SELECT count(*) FROM {s}.dead_letters WHERE queue_name = %s"
_DEAD_LETTERS = """
SELECT id, queue_name, message_id, payload, reason, dead_at_ms FROM {s}.dead_letters
WHERE queue_name = %s ORDER BY id LIMIT %s
"""


class Statements:
    """Every statement of the broker, for the tables of ``schema`` (an identifier already checked)."""

    def __init__(self, schema: str) -> None:
        def sql(template: str) -> str:
            return template.format(s=f'"{schema}"', now=NOW_MS).strip()

        self.insert = sql(_INSERT)
        self.insert_many = sql(_INSERT_MANY)
        self.hand_on_key = sql(_HAND_ON_KEY)
        self.insert_unique = sql(_INSERT_UNIQUE)
        self.key_holder = sql(_KEY_HOLDER)
        self.lease = sql(_LEASE)
        self.next_due = sql(_NEXT_DUE)
        self.delete = sql(_DELETE)
        self.bury = sql(_BURY)
        self.unlease = sql(_UNLEASE)
        self.release_process = sql(_RELEASE_PROCESS)
        self.renew = sql(_RENEW)
        self.purge = sql(_PURGE)
        self.try_vacuum_lock = sql(_TRY_VACUUM_LOCK)
        self.vacuum_unlock = sql(_VACUUM_UNLOCK)
        self.vacuum = sql(_VACUUM)
        self.index_state = sql(_INDEX_STATE)
        self.leftover_indexes = sql(_LEFTOVER_INDEXES)
        self.reindex = sql(_REINDEX)
        self.flush = sql(_FLUSH)
        self.flush_dead = sql(_FLUSH_DEAD)
        self.has_messages = sql(_HAS_MESSAGES)
        self.counts = sql(_COUNTS)
        self.dead_count = sql(_DEAD_COUNT)
        self.dead_letters = sql(_DEAD_LETTERS)
