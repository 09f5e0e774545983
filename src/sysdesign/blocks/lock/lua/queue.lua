-- queue: the live tickets as a flat {id, fields, id, fields, ...}, in no order.
if changed > 0 then
  tidy()
end
return redis.call('HGETALL', ticket_key)
