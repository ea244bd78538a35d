-- greenroom: enqueue one message with a unique key, unless another message holds the key.
--
-- KEYS[1] queue list, KEYS[2] payload hash, KEYS[3] wake-up list, KEYS[4] unique-key hash
-- ARGV[1] redis id, ARGV[2] payload, ARGV[3] unique key, ARGV[4] message id, ARGV[5] key prefix,
-- ARGV[6] queue name, ARGV[7] "1" when the message was consumed before (a retry, a delayed
-- message moved to its queue), else "0"
--
-- The unique-key hash maps a key to its holder, [queue, redis id, message id] in JSON. A holder
-- whose payload is gone (acknowledged, dead-lettered, or lost) holds nothing any more, and a
-- holder with the sender's message id is its predecessor: the key passes on. Returns the
-- holder's payload when the message was not stored, nil when it was. A message consumed before
-- is always stored; without the key if another message holds it.
local record = redis.call("hget", KEYS[4], ARGV[3])
local take_key = true
if record then
    local holder = cjson.decode(record)
    local payload = redis.call("hget", ARGV[5] .. holder[1] .. ".msgs", holder[2])
    if payload and holder[3] ~= ARGV[4] then
        if ARGV[7] ~= "1" then
            return payload
        end
        take_key = false
    end
end
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[2]) == 1 then
    redis.call("rpush", KEYS[1], ARGV[1])
    if redis.call("llen", KEYS[3]) == 0 then
        redis.call("rpush", KEYS[3], "1")
    end
end
if take_key then
    redis.call("hset", KEYS[4], ARGV[3], cjson.encode({ARGV[6], ARGV[1], ARGV[4]}))
end
return nil
