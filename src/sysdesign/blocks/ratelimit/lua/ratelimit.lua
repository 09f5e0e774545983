--[[
Decide every hit of one request, all-or-nothing, in one atomic call.

KEYS[i]    the state key of hit i.
ARGV[1]    "now slack nonce": now in whole ms (from the caller's clock), the
           slack (ms) added to every TTL, a nonce unique to this call.
ARGV[1+i]  hit i as "algorithm n p c cost tag": requests n, period p (ms),
           capacity c, cost, and tag (the concurrency token, else empty).
Few, packed arguments: the client encodes each argument separately, a
large part of its cost per call.

Pass one decides each hit against its key's state as the earlier hits of
this call would leave it, writing nothing but the pruning of expired log
entries and slots. Only when every hit passed does pass two write the new
states. Otherwise nothing is written, and each hit that would have passed is
decided again at cost 0, so it reports the state as it stands.

Returns four integers per hit: allowed (1 or 0), remaining, reset and retry
in ticks of 1/n ms (retry -1: never). The arithmetic is the integer
arithmetic of algorithms.py; every value stays below 2^53, where Lua's
doubles are exact.

State, one key per hit key and algorithm:
  token_bucket    STRING "level last"
  gcra            STRING "ms rest": the theoretical arrival time is ms + rest/n
  fixed_window    STRING "end count"
  sliding_window  STRING "window current previous"
  sliding_log     ZSET of admissions scored by their time
  concurrency     ZSET of slots (token#i) scored by their expiry
TTLs follow `now`, not the server's clock: a key vanishes `slack` ms after
its state has fully reset.
]]

local floor = math.floor
local now, slack, nonce = string.match(ARGV[1], '^(%-?%d+) (%d+) (%S+)$')
now, slack = tonumber(now), tonumber(slack)

local hits, used = {}, {}
for i = 1, #KEYS do
  local name, n, p, c, cost, tag =
    string.match(ARGV[i + 1] or '', '^(%S+) (%d+) (%d+) (%d+) (%d+) ?(%S*)$')
  hits[i] = {
    key = KEYS[i],
    name = name,
    n = tonumber(n),
    p = tonumber(p),
    c = tonumber(c),
    cost = tonumber(cost),
    tag = tag,
  }
  if name then
    used[name] = true
  end
end

local function int(x)
  return string.format('%.0f', x)
end

local function ceil_div(a, b)
  return -floor(-a / b)
end

-- A STRING state: two or three integers, or nil when the key is absent.
local function numbers(key)
  local value = redis.call('GET', key)
  if not value then
    return nil
  end
  local a, b, c = string.match(value, '^(%S+) (%S+) ?(%S*)$')
  return tonumber(a), tonumber(b), tonumber(c)
end

local function put(key, ttl, a, b, c)
  local value
  if c then
    value = string.format('%.0f %.0f %.0f', a, b, c)
  else
    value = string.format('%.0f %.0f', a, b)
  end
  redis.call('SET', key, value, 'PX', int(ttl + slack))
end

-- Each algorithm's functions are defined only when this call uses it: the
-- script runs from the top on every call, and defining all six took about as
-- long as deciding a hit.
local A = {}

if used.token_bucket then
  A.token_bucket = {
    load = function(h)
      local full = h.c * h.p
      local level, last = numbers(h.key)
      if not level then
        return { level = full, last = now }
      end
      if now > last then
        level = math.min(full, level + (now - last) * h.n)
        last = now
      end
      return { level = level, last = last }
    end,
    decide = function(h, s, cost)
      local full, need = h.c * h.p, cost * h.p
      if need <= s.level then
        s.level = s.level - need
        return 1, floor(s.level / h.p), full - s.level, 0
      end
      local retry = need - s.level
      if cost > h.c then
        retry = -1
      end
      return 0, floor(s.level / h.p), full - s.level, retry
    end,
    save = function(h, s)
      local missing = h.c * h.p - s.level
      if missing <= 0 then
        redis.call('DEL', h.key)
      else
        put(h.key, s.last - now + ceil_div(missing, h.n), s.level, s.last)
      end
    end,
  }
end

if used.gcra then
  A.gcra = {
    load = function(h)
      local ms, rest = numbers(h.key)
      local debt = 0
      if ms then
        debt = math.max(0, (ms - now) * h.n + rest)
      end
      return { debt = debt }
    end,
    decide = function(h, s, cost)
      local room = h.c * h.p
      local after = s.debt + cost * h.p
      if after <= room then
        s.debt = after
        return 1, floor((room - after) / h.p), after, 0
      end
      local retry = after - room
      if cost > h.c then
        retry = -1
      end
      return 0, floor((room - s.debt) / h.p), s.debt, retry
    end,
    save = function(h, s)
      if s.debt <= 0 then
        redis.call('DEL', h.key)
      else
        local whole = floor(s.debt / h.n)
        put(h.key, ceil_div(s.debt, h.n), now + whole, s.debt - whole * h.n)
      end
    end,
  }
end

if used.fixed_window then
  A.fixed_window = {
    load = function(h)
      local stop, count = numbers(h.key)
      if stop and now < stop then
        return { stop = stop, count = count }
      end
      return { stop = (floor(now / h.p) + 1) * h.p, count = 0 }
    end,
    decide = function(h, s, cost)
      local left = (s.stop - now) * h.n
      local allowed = s.count + cost <= h.n
      if allowed then
        s.count = s.count + cost
      end
      local reset = 0
      if s.count > 0 then
        reset = left
      end
      if allowed then
        return 1, h.n - s.count, reset, 0
      end
      if cost > h.n then
        left = -1
      end
      return 0, h.n - s.count, reset, left
    end,
    save = function(h, s)
      if s.count > 0 then
        put(h.key, s.stop - now, s.stop, s.count)
      else
        redis.call('DEL', h.key)
      end
    end,
  }
end

if used.sliding_window then
  A.sliding_window = {
    load = function(h)
      local window = floor(now / h.p)
      local s = { window = window, offset = now - window * h.p, current = 0, previous = 0 }
      local stored, current, previous = numbers(h.key)
      if stored then
        if stored >= window then
          s.current, s.previous = current, previous
        elseif stored == window - 1 then
          s.previous = current
        end
      end
      return s
    end,
    decide = function(h, s, cost)
      local n, p = h.n, h.p
      local full = n * p
      local weighted = s.previous * (p - s.offset) + s.current * p
      local allowed = weighted + cost * p <= full
      if allowed then
        s.current = s.current + cost
        weighted = weighted + cost * p
      end
      local reset = 0
      if s.current > 0 then
        reset = (2 * p - s.offset) * n
      elseif s.previous > 0 then
        reset = (p - s.offset) * n
      end
      local remaining = floor(math.max(full - weighted, 0) / p)
      if allowed then
        return 1, remaining, reset, 0
      end
      if cost > n then
        return 0, remaining, reset, -1
      end
      local rest = (n - s.current - cost) * p
      if rest >= 0 and s.previous > 0 then
        local at = p - floor(rest / s.previous)
        if at < p then
          return 0, remaining, reset, (at - s.offset) * n
        end
      end
      local at = 0
      if s.current > 0 then
        at = math.max(p - floor((n - cost) * p / s.current), 0)
      end
      return 0, remaining, reset, (p - s.offset + at) * n
    end,
    save = function(h, s)
      local ttl
      if s.current > 0 then
        ttl = 2 * h.p - s.offset
      elseif s.previous > 0 then
        ttl = h.p - s.offset
      end
      if ttl then
        put(h.key, ttl, s.window, s.current, s.previous)
      else
        redis.call('DEL', h.key)
      end
    end,
  }
end

-- The two ZSET algorithms share their shape: `stored` entries held, `pending`
-- taken earlier in this call and to be scored `fresh`; an entry scored t
-- stops counting at t + `life`.
local score, zadd, zset_decide, zset_expire
if used.sliding_log or used.concurrency then
  score = function(key, index)
    local found = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
    return tonumber(found[2])
  end

  zadd = function(key, at, names)
    local args = {}
    for _, name in ipairs(names) do
      args[#args + 1] = int(at)
      args[#args + 1] = name
      if #args >= 1000 then
        redis.call('ZADD', key, unpack(args))
        args = {}
      end
    end
    if #args > 0 then
      redis.call('ZADD', key, unpack(args))
    end
  end

  zset_decide = function(h, s, cost, fresh, life)
    local n = h.n
    local count = s.stored + s.pending
    local allowed = count + cost <= n
    if allowed then
      count = count + cost
    end
    local reset = 0
    if count > 0 then
      local last = -math.huge
      if count > s.stored then
        last = fresh
      end
      if s.stored > 0 then
        last = math.max(last, score(h.key, -1))
      end
      reset = (last + life - now) * n
    end
    if allowed then
      return 1, n - count, reset, 0
    end
    if cost > n then
      return 0, n - count, reset, -1
    end
    local k = count + cost - n
    local at = fresh
    if k <= s.stored then
      at = score(h.key, k - 1)
    end
    return 0, n - count, reset, (at + life - now) * n
  end

  zset_expire = function(h, life)
    local last = score(h.key, -1)
    if last then
      redis.call('PEXPIRE', h.key, int(last + life - now + slack))
    end
  end
end

if used.sliding_log then
  A.sliding_log = {
    load = function(h)
      redis.call('ZREMRANGEBYSCORE', h.key, '-inf', int(now - h.p))
      return { stored = redis.call('ZCARD', h.key), pending = 0 }
    end,
    decide = function(h, s, cost)
      -- An admission at t counts while now < t + p.
      local allowed, remaining, reset, retry = zset_decide(h, s, cost, now, h.p)
      if allowed == 1 then
        s.pending = s.pending + cost
      end
      return allowed, remaining, reset, retry
    end,
    save = function(h, s)
      local names = {}
      for i = 1, s.pending do
        names[i] = nonce .. ':' .. i
      end
      zadd(h.key, now, names)
      zset_expire(h, h.p)
    end,
  }
end

if used.concurrency then
  A.concurrency = {
    load = function(h)
      redis.call('ZREMRANGEBYSCORE', h.key, '-inf', int(now))
      return { stored = redis.call('ZCARD', h.key), pending = 0, taken = {} }
    end,
    decide = function(h, s, cost)
      local allowed, remaining, reset, retry = zset_decide(h, s, cost, now + h.p, 0)
      if allowed == 1 then
        s.pending = s.pending + cost
        s.taken[#s.taken + 1] = { h.tag, cost }
      end
      return allowed, remaining, reset, retry
    end,
    save = function(h, s)
      local names = {}
      for _, taken in ipairs(s.taken) do
        for i = 1, taken[2] do
          names[#names + 1] = taken[1] .. '#' .. i
        end
      end
      zadd(h.key, now + h.p, names)
      zset_expire(h, 0)
    end,
  }
end

local states, first = {}, {}
for i, h in ipairs(hits) do
  if not h.name then
    return redis.error_reply('ERR malformed rate-limit hit ' .. i)
  end
  h.impl = A[h.name]
  if not h.impl then
    return redis.error_reply('ERR unknown rate-limit algorithm ' .. h.name)
  end
end

local out, passed = {}, true
for i, h in ipairs(hits) do
  local s = states[h.key]
  if not s then
    s = h.impl.load(h)
    states[h.key] = s
    first[#first + 1] = h
  end
  local allowed, remaining, reset, retry = h.impl.decide(h, s, h.cost)
  passed = passed and allowed == 1
  local o = (i - 1) * 4
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = allowed, remaining, reset, retry
end

if passed then
  for _, h in ipairs(first) do
    h.impl.save(h, states[h.key])
  end
else
  for i, h in ipairs(hits) do
    local o = (i - 1) * 4
    if out[o + 1] == 1 then
      local _, remaining, reset = h.impl.decide(h, h.impl.load(h), 0)
      out[o + 2], out[o + 3], out[o + 4] = remaining, reset, 0
    end
  end
end
return out
