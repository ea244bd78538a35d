-- greenroom: settle fetched messages: acknowledge, dead-letter or hand back, in one call.
--
-- KEYS[1] queue list, KEYS[2] payload hash, KEYS[3] ack set of (worker, queue), KEYS[4] wake-up list,
-- KEYS[5] dead-letter zset, KEYS[6] dead-letter payloads, KEYS[7] dead-letter reasons
-- ARGV    triples: op, id, reason (dead letters are stamped with the server's clock)
--   op "a": acknowledge (forget the payload)
--   op "n": dead-letter (reason stored when not empty)
--   op "r": hand back to the head of the queue
--
-- Nothing happens for an id that is no longer in the ack set: it was settled already, or a
-- recovery pass gave it back to the queue (it then runs again: at least once).
local time = redis.call("time")
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local requeued = 0
for i = #ARGV - 2, 1, -3 do
    local op, id, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call("srem", KEYS[3], id) == 1 then
        if op == "a" then
            redis.call("hdel", KEYS[2], id)
        elseif op == "r" then
            if redis.call("hexists", KEYS[2], id) == 1 then
                redis.call("lpush", KEYS[1], id)
                requeued = requeued + 1
            end
        else
            local payload = redis.call("hget", KEYS[2], id)
            if payload then
                redis.call("zadd", KEYS[5], now, id)
                redis.call("hset", KEYS[6], id, payload)
                redis.call("hdel", KEYS[2], id)
                if reason ~= "" then
                    redis.call("hset", KEYS[7], id, reason)
                end
            end
        end
    end
end
if requeued > 0 and redis.call("llen", KEYS[4]) == 0 then
    redis.call("rpush", KEYS[4], "1")
end
return requeued
