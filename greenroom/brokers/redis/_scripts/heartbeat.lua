-- greenroom: a worker's heartbeat and recovery pass, run on a fixed schedule by every worker.
--
-- KEYS[1] heartbeats zset, KEYS[2] this worker's queue registry
-- ARGV[1] key prefix, ARGV[2] worker id, ARGV[3] heartbeat timeout (ms), ARGV[4] dead message ttl (ms),
-- ARGV[5] "1" to retire instead of beating, "2" to beat and recover, "0" to beat only; ARGV[6..] queues consumed
-- (times come from the server's clock, so hosts whose clocks disagree still agree on who is alive)
--
-- 1. Beat: ZADD heartbeats; register the consumed queues (the registry expires after the dead
--    message ttl, so a registry Dramatiq's own maintenance orphans does not live forever).
-- 2. Recover: for every worker whose heartbeat is older than the timeout, move each id of its
--    ack sets that still has a payload back to the head of its queue. A greenroom worker lists
--    its queues in its registry, so all of them are recovered and it is forgotten; a worker
--    without a registry (a Dramatiq worker) is recovered on the queues this worker consumes and
--    left in the heartbeats for Dramatiq's maintenance to forget (Dramatiq producers run it too).
--    The client asks for no recovery when its previous beat went through longer ago than the
--    timeout less one interval: after such a Redis outage every worker's last beat is old, and the
--    live ones must first beat again. (A heartbeat thread merely slowed, by the GIL say, recovers.)
-- 3. Purge dead letters older than the dead message ttl on the consumed queues.
-- Retiring (clean shutdown) drops the heartbeat, registry and fetch records when no ack set is left.
local prefix, wid = ARGV[1], ARGV[2]
local time = redis.call("time")
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local queues = {}
for i = 6, #ARGV do
    queues[#queues + 1] = ARGV[i]
end

local function acks_key(worker, queue)
    return prefix .. "__acks__." .. worker .. "." .. queue
end

if ARGV[5] == "1" then
    local registered = redis.call("smembers", KEYS[2])
    for _, queue in ipairs(registered) do
        if redis.call("scard", acks_key(wid, queue)) == 0 then
            redis.call("srem", KEYS[2], queue)
            redis.call("del", prefix .. "__fetch__." .. wid .. "." .. queue)
        end
    end
    if redis.call("scard", KEYS[2]) == 0 then
        redis.call("del", KEYS[2])
        redis.call("zrem", KEYS[1], wid)
        return 1
    end
    return 0
end

redis.call("zadd", KEYS[1], now, wid)
if #queues > 0 then
    redis.call("sadd", KEYS[2], unpack(queues))
end
-- Never shorter than a dead worker takes to be noticed, or its registry would vanish first.
redis.call("pexpire", KEYS[2], math.max(tonumber(ARGV[4]), 2 * tonumber(ARGV[3]) + 10000))

local function recover(worker, queue)
    local acks = acks_key(worker, queue)
    redis.call("del", prefix .. "__fetch__." .. worker .. "." .. queue)
    local ids = redis.call("smembers", acks)
    if #ids == 0 then
        return 0
    end
    local queue_key = prefix .. queue
    local messages = queue_key .. ".msgs"
    local moved = 0
    for _, id in ipairs(ids) do
        if redis.call("hexists", messages, id) == 1 then
            redis.call("lpush", queue_key, id)
            moved = moved + 1
        end
    end
    redis.call("del", acks)
    if moved > 0 then
        local wake = prefix .. "__notify__." .. queue
        if redis.call("llen", wake) == 0 then
            redis.call("rpush", wake, "1")
        end
    end
    return moved
end

local recovered = 0
local dead = {}
-- No LIMIT: stale entries of Dramatiq producers (which beat on every enqueue and never retire) may
-- pile up at the low end and must not hide a worker that died later.
if ARGV[5] == "2" then
    dead = redis.call("zrangebyscore", KEYS[1], "-inf", "(" .. (now - tonumber(ARGV[3])))
end
for _, worker in ipairs(dead) do
    if worker ~= wid then
        local registry = prefix .. "__queues__." .. worker
        local registered = redis.call("smembers", registry)
        if #registered > 0 then
            for _, queue in ipairs(registered) do
                recovered = recovered + recover(worker, queue)
            end
            redis.call("del", registry)
            redis.call("zrem", KEYS[1], worker)
        else
            for _, queue in ipairs(queues) do
                recovered = recovered + recover(worker, queue)
            end
        end
    end
end

local cutoff = "(" .. (now - tonumber(ARGV[4]))
for _, queue in ipairs(queues) do
    if string.sub(queue, -3) ~= ".DQ" then
        local xq = prefix .. queue .. ".XQ"
        local expired = redis.call("zrangebyscore", xq, "-inf", cutoff, "LIMIT", 0, 1000)
        if #expired > 0 then
            redis.call("zrem", xq, unpack(expired))
            redis.call("hdel", xq .. ".msgs", unpack(expired))
            redis.call("hdel", xq .. ".reasons", unpack(expired))
        end
    end
end
return recovered
