-- Take the lease of a schedule if nobody holds it.
-- KEYS[1] the schedule's hash (token, last_tick, last_run); KEYS[2] its lease key.
-- ARGV[1] the holder (JSON); ARGV[2] the lease in ms.
-- Returns {token, last_tick or "", last_run or ""}, or nil when the lease is held.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('SET', KEYS[2], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
local record = redis.call('HMGET', KEYS[1], 'last_tick', 'last_run')
return {token, record[1] or '', record[2] or ''}
