-- refresh: ARGV[3] id, ARGV[4] ttl (ms). The ticket's new fields, or nil
-- when it is gone (removed, or expired before this call).
local id = ARGV[3]
local fields = redis.call('HGET', ticket_key, id)
if not fields then
  if changed > 0 then
    tidy()
  end
  return false
end
local token, rest = string.match(fields, '^(%d+) %d+ (.*)$')
local expires = now + tonumber(ARGV[4])
fields = token .. ' ' .. int(expires) .. ' ' .. rest
redis.call('HSET', ticket_key, id, fields)
redis.call('ZADD', expiry_key, expires, id)
tidy()
return fields
