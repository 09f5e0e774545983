--[[
The prelude of every ticket-queue script (RedisTicketStore): each script is
this file followed by its own body, run as one atomic call.

KEYS[1]  STRING  the name's last token: INCR only, never expires, so tokens
                 never repeat even after every ticket of the name is gone.
KEYS[2]  ZSET    ticket id -> token: the queue, in token order.
KEYS[3]  ZSET    ticket id -> expiry (ms by this server's clock).
KEYS[4]  HASH    ticket id -> "token expires_ms permits mode owner".
KEYS[5]  SET     the names that have tickets (for listing).
ARGV[1]  the lock name; ARGV[2] the channel that hears each ticket's id as
         it leaves (removed or expired), for waiters; the body's own after.

Expiry is by the server's clock (TIME), the same for every client. Every
script first drops the expired tickets, publishing their ids, so no script
ever returns or counts one. The three per-name keys expire a second after
the last ticket would, so an abandoned name leaves only its counter behind.
]]

local token_key, queue_key, expiry_key, ticket_key, names_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, channel = ARGV[1], ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local SLACK_MS = 1000
local BATCH = 500 -- ids per command: well inside Lua's limit on unpack()

local function int(x)
  return string.format('%.0f', x)
end

local function forget(ids)
  redis.call('ZREM', queue_key, unpack(ids))
  redis.call('ZREM', expiry_key, unpack(ids))
  redis.call('HDEL', ticket_key, unpack(ids))
  for _, id in ipairs(ids) do
    redis.call('PUBLISH', channel, id)
  end
end

-- Drop the tickets whose time ran out; how many there were.
local function purge()
  local dropped = 0
  while true do
    local expired = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now, 'LIMIT', 0, BATCH)
    if #expired == 0 then
      return dropped
    end
    forget(expired)
    dropped = dropped + #expired
  end
end

-- After a change: an empty name loses its keys (not its counter), and a
-- busy one's keys live until a second after its last ticket's expiry.
local function tidy()
  local last = redis.call('ZRANGE', expiry_key, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', queue_key, expiry_key, ticket_key)
    redis.call('SREM', names_key, name)
    return
  end
  local at = int(tonumber(last[2]) + SLACK_MS)
  redis.call('PEXPIREAT', queue_key, at)
  redis.call('PEXPIREAT', expiry_key, at)
  redis.call('PEXPIREAT', ticket_key, at)
end

local changed = purge()
