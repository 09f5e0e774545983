-- check: ARGV[3..] ticket ids. {live tickets of the name, id gone, ...}:
-- which of the ids have left the queue (removed or expired).
if changed > 0 then
  tidy()
end
local reply = {redis.call('HLEN', ticket_key)}
for i = 3, #ARGV do
  if redis.call('HEXISTS', ticket_key, ARGV[i]) == 0 then
    reply[#reply + 1] = ARGV[i]
  end
end
return reply
