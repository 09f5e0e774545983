--[[
Redlock release on one server: delete the key only if it still holds this
acquisition's value, so a late release never frees another holder's lock.
KEYS[1] the lock key. ARGV[1] the value. Returns 1 when deleted, else 0.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
