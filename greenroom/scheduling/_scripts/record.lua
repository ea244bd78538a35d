-- Move a schedule's tick record forward, fenced by the caller's token.
-- KEYS[1] the schedule's hash.
-- ARGV[1] the caller's token; ARGV[2] the tick (epoch ms); ARGV[3] "1" when the tick is enqueued.
-- Returns 1 when recorded, 0 when the record already covers the tick, -1 when the token is stale.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return -1
end
local last = redis.call('HGET', KEYS[1], 'last_tick')
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'last_tick', ARGV[2])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'last_run', ARGV[2])
end
return 1
