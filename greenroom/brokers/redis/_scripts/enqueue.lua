-- greenroom: enqueue messages atomically.
--
-- KEYS[1] queue list, KEYS[2] payload hash, KEYS[3] wake-up list
-- ARGV    id1, payload1, id2, payload2, ...
--
-- HSETNX makes a call retried after a lost reply harmless: an id that is already stored is not
-- pushed a second time. The wake-up list holds at most one token; an idle consumer blocks on it.
local pushed = 0
for i = 1, #ARGV, 2 do
    if redis.call("hsetnx", KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
        redis.call("rpush", KEYS[1], ARGV[i])
        pushed = pushed + 1
    end
end
if pushed > 0 and redis.call("llen", KEYS[3]) == 0 then
    redis.call("rpush", KEYS[3], "1")
end
return pushed
