-- Schema of greenroom's SQLite broker, version 1 (stored in PRAGMA user_version).
--
-- Applied idempotently, in one write transaction, by the first connection that finds
-- user_version below 1. A later version is a script of its own (_schema_2.sql), run after this
-- one in the same transaction; the broker refuses a database whose user_version is newer than
-- it knows. (_tables.py runs the statements one by one, without the comment lines.)

BEGIN IMMEDIATE;

-- One row per message waiting, delayed or being processed.
--   queue_name      the queue the message is on: "default", or "default.DQ" for a delayed message
--   payload         the encoded message, exactly the bytes every other broker carries
--   due_ms          epoch ms from which the row may be fetched: the eta of a delayed message, the
--                   enqueue time otherwise (a foreign producer may omit it: it defaults to now)
--   lease_owner     the consumer holding the row, NULL when nobody does
--   lease_until_ms  epoch ms when the lease runs out; 0 when the row is not leased. A row is
--                   visible when due_ms <= now AND lease_until_ms <= now, so an expired lease
--                   (a worker killed with SIGKILL) needs no clean-up to be delivered again.
CREATE TABLE IF NOT EXISTS greenroom_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_name TEXT NOT NULL,
    payload BLOB NOT NULL,
    due_ms INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    lease_owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0
);

-- Fetching walks this index in (due_ms, id) order and stops at the first rows not yet due, so
-- 100,000 delayed messages cost nothing until they are due.
CREATE INDEX IF NOT EXISTS greenroom_messages_by_due ON greenroom_messages (queue_name, due_ms);

-- Lease renewal touches only the rows one process holds.
CREATE INDEX IF NOT EXISTS greenroom_messages_by_owner
    ON greenroom_messages (lease_owner) WHERE lease_owner IS NOT NULL;

-- Dead letters, kept for dead_message_ttl and then purged.
--   queue_name  the canonical queue ("default" also for messages that failed on "default.DQ")
--   message_id  the message's id, NULL when the payload could not be decoded
--   reason      repr() of the exception the message failed with, or why its payload is invalid
CREATE TABLE IF NOT EXISTS greenroom_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_name TEXT NOT NULL,
    message_id TEXT,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    dead_at_ms INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS greenroom_dead_letters_by_queue ON greenroom_dead_letters (queue_name);
CREATE INDEX IF NOT EXISTS greenroom_dead_letters_by_age ON greenroom_dead_letters (dead_at_ms);

PRAGMA user_version = 1;

COMMIT;
