--[[
Redlock renewal on one server: a new TTL for the key only if it still
holds this acquisition's value (not expired, not someone else's).
KEYS[1] the lock key. ARGV[1] the value, ARGV[2] the TTL in ms. Returns 1 or 0.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
