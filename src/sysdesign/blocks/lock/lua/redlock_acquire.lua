--[[
Redlock, first step on one server: take the lock key if it is free.
KEYS[1] the lock key, KEYS[2] the name's fencing counter on this server.
ARGV[1] the acquisition's random value, ARGV[2] the TTL in ms.
Returns this server's fencing counter when the key was taken, else -1.
]]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return -1
