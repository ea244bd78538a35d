-- Extend a lease, if it is still the caller's grant.
-- KEYS[1] the schedule's hash; KEYS[2] its lease key.
-- ARGV[1] the caller's token; ARGV[2] the holder (JSON); ARGV[3] the lease in ms.
-- Returns 1 when the lease is (again) held by the caller, 0 when it was lost.
local mine = ARGV[1] .. ' ' .. ARGV[2]
local current = redis.call('GET', KEYS[2])
if current == mine then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
-- Expired, and nobody took it since (the token did not move): it is still the caller's.
if current == false and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('SET', KEYS[2], mine, 'PX', ARGV[3])
  return 1
end
return 0
