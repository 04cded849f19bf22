-- GCRA batch reservation (sender/core/ratelimit.py `grant_batch` is the same math).
-- KEYS[1] bucket. ARGV: period_us, tolerance_us, horizon_us, wanted.
-- Reserves up to `wanted` consecutive slots whose wait is within the horizon.
-- Returns {granted, first_tat - now (µs), µs until half the horizon is free (when short)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local first = tat
local granted = 0
while granted < wanted and (tat + period - tolerance - now) <= horizon do
  tat = tat + period
  granted = granted + 1
end
if granted > 0 then
  local ttl_ms = math.ceil((tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', ttl_ms)
end
local retry = 0
if granted < wanted then
  retry = tat + period - tolerance - now - horizon / 2
  if retry < 0 then retry = 0 end
end
return {granted, first - now, retry}
