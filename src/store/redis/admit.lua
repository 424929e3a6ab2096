-- kappe admit: decide one impression for one visitor and record it, atomically.
--
-- KEYS[1]  the visitor's hash (one key per pseudonymous visitor, so Cluster-safe)
-- ARGV     offset, campaign, has_advertiser, advertiser, max_age (0 = none), max_retention,
--          then three cap lists (campaign, advertiser, visitor), each as n, limit1, window1, ...
--
-- Hash fields: "c:<campaign>" and "a:<advertiser>" hold "first_seen,t1,t2,..." (timestamps
-- oldest first), "v" holds the visitor-wide "t1,t2,...", "b" holds the burns as a JSON array of
-- [pattern, until]. Time is the Redis server's, so instances with skewed clocks agree.
--
-- Returns {1, now, ttl} when admitted, {0, now, ttl, reason, retry_at (-1: none), limit, window}
-- when denied. Reasons: 1 burned, 2 max age, 3 campaign cap, 4 advertiser cap, 5 visitor cap.

local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(ARGV[1])
local campaign = ARGV[2]
local has_adv = ARGV[3] == '1'
local advertiser = ARGV[4]
local max_age = tonumber(ARGV[5])
local retention = tonumber(ARGV[6])

local argi = 7
local function read_caps()
  local n = tonumber(ARGV[argi])
  argi = argi + 1
  local caps = {}
  for k = 1, n do
    caps[k] = { tonumber(ARGV[argi]), tonumber(ARGV[argi + 1]) }
    argi = argi + 2
  end
  return caps
end
local ccaps = read_caps()
local acaps = read_caps()
local vcaps = read_caps()

-- Mirrors policy::glob_match byte for byte: `*` any run, `?` one byte, literals first.
local function glob(p, s)
  local pl, sl = #p, #s
  local pi, si = 1, 1
  local sp, ss = 0, 0
  while si <= sl do
    local pc = nil
    if pi <= pl then pc = string.byte(p, pi) end
    if pc ~= nil and (pc == 63 or pc == string.byte(s, si)) then
      pi = pi + 1
      si = si + 1
    elseif pc == 42 then
      sp = pi
      ss = si
      pi = pi + 1
    elseif sp > 0 then
      pi = sp + 1
      ss = ss + 1
      si = ss
    else
      return false
    end
  end
  while pi <= pl and string.byte(p, pi) == 42 do
    pi = pi + 1
  end
  return pi > pl
end

local function parse_record(s)
  local list = {}
  if not s then
    return nil, list
  end
  local fs = nil
  for num in string.gmatch(s, '[^,]+') do
    if fs == nil then
      fs = tonumber(num)
    else
      list[#list + 1] = tonumber(num)
    end
  end
  return fs, list
end

local function parse_list(s)
  local list = {}
  if not s then
    return list
  end
  for num in string.gmatch(s, '[^,]+') do
    list[#list + 1] = tonumber(num)
  end
  return list
end

local ttl = redis.call('TTL', key)

local function deny(reason, retry_at, cap)
  local limit, window = 0, 0
  if cap then
    limit, window = cap[1], cap[2]
  end
  return { 0, now, ttl, reason, retry_at, limit, window }
end

-- The first cap (in the given order) with at least `limit` timestamps in (now - window, now].
-- Lists are oldest first, so the timestamps inside a window are a suffix.
local function check(caps, list)
  local n = #list
  for _, cap in ipairs(caps) do
    local limit, window = cap[1], cap[2]
    if n >= limit then
      local count = 0
      for k = n, 1, -1 do
        if list[k] > now - window then
          count = count + 1
        else
          break
        end
      end
      if count >= limit then
        return cap, list[n - limit + 1] + window
      end
    end
  end
  return nil, nil
end

local cfield = 'c:' .. campaign
local afield = 'a:' .. advertiser
local vals = redis.call('HMGET', key, cfield, afield, 'v', 'b')

local burns = {}
if vals[4] then
  burns = cjson.decode(vals[4])
end
local burned_until = nil
for _, b in ipairs(burns) do
  if b[2] > now and glob(b[1], campaign) then
    if burned_until == nil or b[2] > burned_until then
      burned_until = b[2]
    end
  end
end
if burned_until then
  return deny(1, burned_until, nil)
end

local cfs, clist = parse_record(vals[1])
if max_age > 0 and cfs ~= nil and now >= cfs + max_age then
  return deny(2, -1, nil)
end

local cap, retry = check(ccaps, clist)
if cap then
  return deny(3, retry, cap)
end
local afs, alist = nil, {}
if has_adv then
  afs, alist = parse_record(vals[2])
  cap, retry = check(acaps, alist)
  if cap then
    return deny(4, retry, cap)
  end
end
local vlist = parse_list(vals[3])
cap, retry = check(vcaps, vlist)
if cap then
  return deny(5, retry, cap)
end

-- Admitted: record now, keeping only the newest `keep` timestamps (the largest limit).
local function max_limit(caps)
  local m = 0
  for _, c in ipairs(caps) do
    if c[1] > m then
      m = c[1]
    end
  end
  return m
end
local function max_window(caps)
  local m = 0
  for _, c in ipairs(caps) do
    if c[2] > m then
      m = c[2]
    end
  end
  return m
end
local function push(list, keep)
  list[#list + 1] = now
  -- A server clock stepping back must not break the oldest-first order the checks rely on.
  if #list > 1 and list[#list - 1] > now then
    table.sort(list)
  end
  local out = {}
  for k = math.max(1, #list - keep + 1), #list do
    out[#out + 1] = list[k]
  end
  return out
end
local function encode(fs, list)
  if #list == 0 then
    return tostring(fs)
  end
  return tostring(fs) .. ',' .. table.concat(list, ',')
end

if cfs == nil then
  cfs = now
end
if #ccaps > 0 then
  clist = push(clist, max_limit(ccaps))
end
local writes = { cfield, encode(cfs, clist) }
if has_adv then
  if afs == nil then
    afs = now
  end
  if #acaps > 0 then
    alist = push(alist, max_limit(acaps))
  end
  writes[#writes + 1] = afield
  writes[#writes + 1] = encode(afs, alist)
end
if #vcaps > 0 then
  vlist = push(vlist, max_limit(vcaps))
  writes[#writes + 1] = 'v'
  writes[#writes + 1] = table.concat(vlist, ',')
end
redis.call('HSET', key, unpack(writes))

-- The key lives as long as its longest need: the widest window, the max age of this
-- campaign's first impression plus one more such period (so a campaign past its age cannot
-- start following again at once), never less than it already had, never more than retention.
local need = math.max(max_window(ccaps), max_window(acaps), max_window(vcaps), 1)
if max_age > 0 then
  need = math.max(need, cfs + 2 * max_age - now)
end
if ttl > need then
  need = ttl
end
if need > retention then
  need = retention
end
redis.call('EXPIRE', key, need)
return { 1, now, need }
