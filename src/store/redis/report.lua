-- kappe report: everything stored about one visitor, with the server's time and the key's TTL
-- so the caller can say when Redis will forget it.
--
-- KEYS[1]  the visitor's hash
-- ARGV     offset
--
-- Returns {now, ttl, {field1, value1, field2, value2, ...}}.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(ARGV[1])
return { now, redis.call('TTL', KEYS[1]), redis.call('HGETALL', KEYS[1]) }
