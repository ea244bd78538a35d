-- greenroom: put dead letters back on their queue, each in the same atomic step as it leaves the dead letters.
--
-- KEYS[1] queue list, KEYS[2] payload hash, KEYS[3] wake-up list,
-- KEYS[4] dead-letter zset, KEYS[5] dead-letter payloads, KEYS[6] dead-letter reasons
-- ARGV    pairs: redis id of a dead letter, payload to enqueue under that id (its retry count reset)
--
-- A dead letter that is gone (requeued or purged by someone else since it was read) is skipped,
-- and so is one whose id is live on the queue again: it stays a dead letter. Returns how many moved.
local moved = 0
for i = 1, #ARGV, 2 do
    local id = ARGV[i]
    if redis.call("zscore", KEYS[4], id) and redis.call("hsetnx", KEYS[2], id, ARGV[i + 1]) == 1 then
        redis.call("rpush", KEYS[1], id)
        redis.call("zrem", KEYS[4], id)
        redis.call("hdel", KEYS[5], id)
        redis.call("hdel", KEYS[6], id)
        moved = moved + 1
    end
end
if moved > 0 and redis.call("llen", KEYS[3]) == 0 then
    redis.call("rpush", KEYS[3], "1")
end
return moved
