-- enqueue: ARGV[3] id, ARGV[4] mode, ARGV[5] permits, ARGV[6] owner,
-- ARGV[7] ttl (ms). Returns {token, expires_ms, {id, fields, ...}}: the live
-- tickets after it, as queue.lua gives them, so a caller learns in the same
-- round trip whether it holds the lock.
local id, mode, permits, owner = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local expires = now + tonumber(ARGV[7])
local token = redis.call('INCR', token_key)
redis.call('ZADD', queue_key, token, id)
redis.call('ZADD', expiry_key, expires, id)
redis.call('HSET', ticket_key, id, table.concat({int(token), int(expires), permits, mode, owner}, ' '))
redis.call('SADD', names_key, name)
tidy()
return {token, expires, redis.call('HGETALL', ticket_key)}
