--[[
Redlock, second step on one server: raise the fencing counter to the
acquisition's token, only while this server still holds the key for it.
KEYS[1] the lock key, KEYS[2] the fencing counter.
ARGV[1] the acquisition's value, ARGV[2] its token.
Returns 1 when the key still holds the value (counter now >= token), else 0.
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
