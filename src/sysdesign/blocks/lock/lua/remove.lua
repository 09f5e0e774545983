-- remove: ARGV[3] id. 1 when the ticket was live and is now gone, else 0.
local id = ARGV[3]
local removed = 0
if redis.call('HEXISTS', ticket_key, id) == 1 then
  forget({id})
  removed = 1
  changed = changed + 1
end
if changed > 0 then
  tidy()
end
return removed
