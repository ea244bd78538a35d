-- greenroom: delete the oldest dead letters of a queue, up to a time.
--
-- KEYS[1] dead-letter zset, KEYS[2] dead-letter payloads, KEYS[3] dead-letter reasons
-- ARGV[1] delete those dead at or before this time (ms, server clock), ARGV[2] most to delete in this call
--
-- Returns how many were deleted; the caller calls again while that is ARGV[2].
local ids = redis.call("zrangebyscore", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call("zrem", KEYS[1], id)
    redis.call("hdel", KEYS[2], id)
    redis.call("hdel", KEYS[3], id)
end
return #ids
