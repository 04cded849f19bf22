-- GCRA batch reservation shared fairly between campaigns (DESIGN.md §4, §12).
-- The same math as sender/core/fair_share.py `grant_fair_batch` (split_slots, then
-- ratelimit.grant_batch); change both together.
-- KEYS[1] the inbox's bucket (tat, µs); KEYS[2] its campaigns' standings, a hash of
--   campaign -> "tag seen_us backlogged".
-- ARGV: period_us, tolerance_us, horizon_us, quantum, active_us, forget_us, fair_retry_us,
--   then campaign, wanted pairs in the order the pod serves them.
-- Returns {first_tat - now (µs), µs to wait before asking again (when short), granted...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local quantum = tonumber(ARGV[4])
local active = tonumber(ARGV[5])
local forget = tonumber(ARGV[6])
local fair_retry = tonumber(ARGV[7])

local ids, wants, asked = {}, {}, {}
local wanted = 0
for i = 8, #ARGV - 1, 2 do
  local n = #ids + 1
  ids[n] = ARGV[i]
  wants[n] = tonumber(ARGV[i + 1])
  asked[ARGV[i]] = true
  wanted = wanted + wants[n]
end

-- Remembered standings; the lowest waiting tag, and the lowest of campaigns not asking.
local known, waiting = {}, {}
local lowest, others = nil, nil
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat - 1, 2 do
  local tag, seen, backlogged = string.match(flat[i + 1], '^(%d+) (%d+) ([01])$')
  tag, seen = tonumber(tag), tonumber(seen)
  if tag == nil or now - seen > forget then
    redis.call('HDEL', KEYS[2], flat[i])
  else
    known[flat[i]] = tag
    if backlogged == '1' and now - seen <= active then
      waiting[flat[i]] = true
      if lowest == nil or tag < lowest then lowest = tag end
      if not asked[flat[i]] and (others == nil or tag < others) then others = tag end
    end
  end
end
local limit = nil
if others ~= nil then limit = others + quantum end

-- The tag each asking campaign joins with.
local tags, granted = {}, {}
for j = 1, #ids do
  local own = known[ids[j]]
  local tag
  if own == nil then
    tag = lowest or 0
  elseif waiting[ids[j]] or lowest == nil then
    tag = own
  else
    tag = math.max(own, lowest)
  end
  if lowest ~= nil then tag = math.min(tag, lowest + quantum) end
  tags[j] = tag
  granted[j] = 0
end

-- Slots the bucket has room for, one at a time to the lowest tag that may have one.
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local first = tat
local capacity = math.floor((horizon + tolerance + now - first) / period)
local given = 0
while given < capacity do
  local best = nil
  for j = 1, #ids do
    if granted[j] < wants[j] and (limit == nil or tags[j] < limit) then
      if best == nil or tags[j] < tags[best] then best = j end
    end
  end
  if best == nil then break end
  granted[best] = granted[best] + 1
  tags[best] = tags[best] + 1
  given = given + 1
end

for j = 1, #ids do
  local short = 0
  if granted[j] < wants[j] then short = 1 end
  redis.call('HSET', KEYS[2], ids[j], string.format('%d %d %d', tags[j], now, short))
end
redis.call('PEXPIRE', KEYS[2], math.ceil(forget / 1000))

if given > 0 then
  tat = first + given * period
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local retry = 0
if given < wanted then
  if given < capacity then
    retry = fair_retry
  else
    retry = tat + period - tolerance - now - horizon / 2
    if retry < 0 then retry = 0 end
  end
end
local reply = {first - now, retry}
for j = 1, #ids do reply[#reply + 1] = granted[j] end
return reply
