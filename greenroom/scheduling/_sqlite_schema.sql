-- The leases and tick records of greenroom's schedulers, kept in the SQLite broker's own file.
--
-- Applied idempotently by the first connection of each process. The table is not part of the
-- broker's versioned schema (PRAGMA user_version stays the broker's): a later version of this
-- table adds columns guarded the same way.
--
-- One row per schedule name:
--   token           the fencing token: raised by one every time the lease changes holder
--   holder          JSON of the leading scheduler (id, host, pid); NULL once released
--   lease_until_ms  epoch ms until which the holder leads unless it renews
--   last_tick_ms    the newest tick taken (enqueued or skipped): no tick at or before it is sent again
--   last_run_ms     the newest tick enqueued
CREATE TABLE IF NOT EXISTS greenroom_schedules (
    name TEXT PRIMARY KEY,
    token INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    last_tick_ms INTEGER,
    last_run_ms INTEGER
) WITHOUT ROWID;
