-- Give a lease up, so that another scheduler takes it at once.
-- KEYS[1] the schedule's hash; KEYS[2] its lease key.
-- ARGV[1] the caller's token; ARGV[2] the holder (JSON).
-- The token moves on, so that nothing the caller still sends under it is accepted.
if redis.call('GET', KEYS[2]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('DEL', KEYS[2])
end
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'token', 1)
end
return 1
