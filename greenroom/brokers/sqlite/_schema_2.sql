-- Schema of greenroom's SQLite broker, version 2: unique jobs (see greenroom/brokers/_unique.py).
--
-- Run (without its comment lines, statement by statement) in the transaction that brings a file
-- from version 1 or 0 up to 2, by the first connection to find the older version once it holds the
-- write lock: ALTER TABLE cannot be repeated.
--   message_id             the message's id, kept for messages with a unique key only
--   unique_key             the message's unique key, NULL for most messages
--   unique_held            1 while the row holds its key: no two rows hold the same key
--   unique_until_finished  1: hold the key while the message runs; 0: a lease lets it go

ALTER TABLE greenroom_messages ADD COLUMN message_id TEXT;
ALTER TABLE greenroom_messages ADD COLUMN unique_key TEXT;
ALTER TABLE greenroom_messages ADD COLUMN unique_held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE greenroom_messages ADD COLUMN unique_until_finished INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX greenroom_messages_by_held_key ON greenroom_messages (unique_key) WHERE unique_held;
CREATE INDEX greenroom_messages_by_unique_key ON greenroom_messages (unique_key) WHERE unique_key IS NOT NULL;
PRAGMA user_version = 2;
