-- kappe burn: the visitor asks not to see campaigns matching a pattern until now + duration.
--
-- KEYS[1]  the visitor's hash
-- ARGV     offset, pattern, duration_secs, max_retention
--
-- Burns live in the field "b" as a JSON array of [pattern, until]; expired burns and an older
-- burn of the same pattern are dropped. The key's TTL grows to cover the burn, up to retention.
-- Returns {now, until}.

local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(ARGV[1])
local pattern = ARGV[2]
local duration = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local untl = now + duration

local burns = {}
local raw = redis.call('HGET', key, 'b')
if raw then
  for _, b in ipairs(cjson.decode(raw)) do
    if b[2] > now and b[1] ~= pattern then
      burns[#burns + 1] = b
    end
  end
end
burns[#burns + 1] = { pattern, untl }
redis.call('HSET', key, 'b', cjson.encode(burns))

local ttl = redis.call('TTL', key)
local need = math.max(duration, ttl, 1)
if need > retention then
  need = retention
end
redis.call('EXPIRE', key, need)
return { now, untl }
