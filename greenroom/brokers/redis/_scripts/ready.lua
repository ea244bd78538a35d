-- greenroom: which of the given queue lists hold anything (the idle waiter's periodic look).
--
-- KEYS  queue lists
-- Returns the positions (from 1) in KEYS of the lists that are not empty.
--
-- Producers that push no wake-up token (Dramatiq's, or a raw RPUSH) are noticed this way, as are
-- wake-up tokens lost on the way; one call covers every idle queue of a worker process.
local ready = {}
for i = 1, #KEYS do
    if redis.call("llen", KEYS[i]) > 0 then
        ready[#ready + 1] = i
    end
end
return ready
