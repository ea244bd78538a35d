-- greenroom: take up to ARGV[1] messages off a queue into this worker's ack set.
--
-- KEYS[1] queue list, KEYS[2] payload hash, KEYS[3] ack set of (worker, queue), KEYS[4] wake-up list,
-- KEYS[5] heartbeats, KEYS[6] the worker's queue registry, KEYS[7] dead-letter zset,
-- KEYS[8] dead-letter payloads, KEYS[9] dead-letter reasons, KEYS[10] record of the last fetch
-- ARGV[1] count, ARGV[2] worker id, ARGV[3] queue name, ARGV[4] request token
-- (times come from the server's clock, so workers on hosts whose clocks disagree agree on who is alive)
--
-- Returns a flat array: id1, payload1, id2, payload2, ... An id whose payload is missing is
-- dead-lettered here (with its reason) and comes back with a nil payload so the client can log it.
--
-- The record (token, ids...) makes a fetch idempotent: when the connection breaks before the reply
-- arrives, the client repeats the call with the same token and gets the same messages, which are
-- otherwise stranded in its ack set while it lives.
local time = redis.call("time")
local now = time[1] * 1000 + math.floor(time[2] / 1000)
redis.call("zadd", KEYS[5], now, ARGV[2])
local ids
if redis.call("lindex", KEYS[10], 0) == ARGV[4] then
    ids = redis.call("lrange", KEYS[10], 1, -1)
    if #ids == 0 then
        return {}
    end
else
    ids = redis.call("lpop", KEYS[1], ARGV[1])
    redis.call("del", KEYS[10])
    if not ids then
        return {}
    end
    redis.call("rpush", KEYS[10], ARGV[4], unpack(ids))
    -- The registry lets a recovery pass find every ack set of this worker without KEYS.
    redis.call("sadd", KEYS[6], ARGV[3])
    redis.call("sadd", KEYS[3], unpack(ids))
end
local payloads = redis.call("hmget", KEYS[2], unpack(ids))
local result = {}
for i = 1, #ids do
    local payload = payloads[i]
    if not payload then
        redis.call("srem", KEYS[3], ids[i])
        redis.call("zadd", KEYS[7], now, ids[i])
        redis.call("hset", KEYS[8], ids[i], "")
        redis.call("hset", KEYS[9], ids[i], "the payload was missing from " .. KEYS[2])
    end
    result[2 * i - 1] = ids[i]
    result[2 * i] = payload
end
-- Pass the wake-up on, so another idle consumer takes what this one left.
if redis.call("llen", KEYS[1]) > 0 and redis.call("llen", KEYS[4]) == 0 then
    redis.call("rpush", KEYS[4], "1")
end
return result
