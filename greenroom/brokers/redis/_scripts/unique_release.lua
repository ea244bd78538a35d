-- greenroom: let unique keys go, each only if the message named still holds it.
--
-- KEYS[1] unique-key hash
-- ARGV    pairs: unique key, redis id of the message that lets it go
--
-- A worker lets a key go when it takes the message from its queue, or, with
-- unique_until="finished", once the message is acknowledged or dead-lettered. A key that passed
-- on to the message's next incarnation (a retry) stays with it.
local released = 0
for i = 1, #ARGV, 2 do
    local record = redis.call("hget", KEYS[1], ARGV[i])
    if record and cjson.decode(record)[2] == ARGV[i + 1] then
        redis.call("hdel", KEYS[1], ARGV[i])
        released = released + 1
    end
end
return released
