"""The server-side staleness judge of purgeIdempotencyKeys' redis backend (a Lua script).

Why on the server: judging a million records in the operator means shipping every record over
the wire and parsing it in Python, and deleting safely then needs a second read per key (the
old WATCH/TYPE/HMGET/EXEC: four round trips per key). Redis runs a script atomically, so one
EVALSHA per batch SCANs a few steps (``redis_lua``), reads each key, judges it, and (in
``purge`` mode) UNLINKs it in the same atomic step: a leader that finished or refreshed its
lock before the script ran is seen as not stale and kept; none can write in between. Only
counts, a digest, tenants, lock-age bounds and the first few stale entries come back; never a
payload.

The rules are those of ``remedy.actions.idempotency.judge`` (state equals the in-progress
value, lock time past ``grace``, tenant / key prefix / replay filters). Lock times are epoch
seconds or milliseconds, or ISO 8601 ``YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH[:]MM|±HH]``.
Where Python's parser would accept a rarer form (``T12``, compact dates, ``1_000``), the script
answers "unparseable", i.e. *not stale*: a disagreement can only keep a key, never delete one.
A batch is at most ``batchSize`` keys (default 1,000), which bounds how long one script holds
Redis's single thread (about a millisecond per 1,000 small hashes).
"""

from __future__ import annotations

from .redis_lua import PROLOGUE_LUA

# Reason codes, in the order the script returns their counts.
REASONS = ("notInProgress", "lockNotExpired", "unparseableLockTime", "filteredOut", "notARecord", "vanished")

# ARGV: mode ('judge' | 'purge'), now, grace, the five field names, the in-progress value, three
# (flag, value) filter pairs, budget, cursor, pattern, batch, max_steps, sample_room.
# Returns {cursor, scanned, reason counts[6], stale (or purged) count, capped, sample entries,
#          digest, oldest expiry, newest expiry, tenants as {name, count, ...}}.
STALE_LOCKS_LUA = PROLOGUE_LUA + r"""
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local f_key, f_tenant, f_state, f_lock, f_replay = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local in_progress = ARGV[9]
local want_tenant = nil
if ARGV[10] == '1' then want_tenant = ARGV[11] end
local want_prefix = nil
if ARGV[12] == '1' then want_prefix = ARGV[13] end
local min_replay = nil
if ARGV[14] == '1' then min_replay = tonumber(ARGV[15]) end
local budget = tonumber(ARGV[16])
local cursor, pattern = ARGV[17], ARGV[18]
local batch, max_steps, room = tonumber(ARGV[19]), tonumber(ARGV[20]), tonumber(ARGV[21])

local mdays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
local function is_leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function parse_iso(s)
  local y, mo, d, rest = string.match(s, '^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 then return nil end
  local ml = mdays[mo]
  if mo == 2 and is_leap(y) then ml = 29 end
  if d > ml then return nil end
  local base = days_from_civil(y, mo, d) * 86400
  if rest == '' then return base end
  local hh, mm, tail = string.match(rest, '^[Tt ](%d%d):(%d%d)(.*)$')
  if not hh then return nil end
  local h, mi, sec, frac = tonumber(hh), tonumber(mm), 0, 0
  local ss, t2 = string.match(tail, '^:(%d%d)(.*)$')
  if ss then
    sec, tail = tonumber(ss), t2
    local fr, t3 = string.match(tail, '^[%.,](%d+)(.*)$')
    if fr then frac, tail = tonumber('0.' .. fr), t3 end
  end
  if h > 23 or mi > 59 or sec > 59 then return nil end
  local offset = 0
  if tail ~= '' and tail ~= 'Z' and tail ~= 'z' then
    local sign, oh, om = string.match(tail, '^([%+%-])(%d%d):?(%d%d)$')
    if not sign then
      sign, oh = string.match(tail, '^([%+%-])(%d%d)$')
      om = '00'
    end
    if not sign then return nil end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil end
    offset = oh * 3600 + om * 60
    if sign == '-' then offset = -offset end
  end
  return base + h * 3600 + mi * 60 + sec + frac - offset
end

local function is_numeric(s)
  return string.match(s, '^[%+%-]?%d+%.?%d*$') or string.match(s, '^[%+%-]?%d*%.%d+$')
      or string.match(s, '^[%+%-]?%d+%.?%d*[eE][%+%-]?%d+$')
end

local function parse_time(v)
  local secs
  if type(v) == 'number' then
    secs = v
  elseif type(v) == 'string' then
    local s = string.match(v, '^%s*(.-)%s*$')
    if is_numeric(s) then secs = tonumber(s) else return parse_iso(s) end
  else
    return nil
  end
  if secs == nil or secs ~= secs or secs == math.huge or secs == -math.huge then return nil end
  if secs > 1e11 then secs = secs / 1000 end
  return secs
end

local function as_int(v)
  local n = nil
  if type(v) == 'number' then n = v
  elseif type(v) == 'string' then
    local s = string.match(v, '^%s*(.-)%s*$')
    if is_numeric(s) then n = tonumber(s) end
  end
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  if n >= 0 then return math.floor(n) end
  return math.ceil(n)
end

local function scalar(v)
  if type(v) == 'string' or type(v) == 'number' then return v end
  return false
end

local function read(k)
  local t = redis.call('TYPE', k)['ok']
  if t == 'hash' then
    local v = redis.call('HMGET', k, f_key, f_tenant, f_state, f_lock, f_replay)
    if not (v[1] or v[2] or v[3] or v[4] or v[5]) then return nil, 'notARecord' end
    return {key = v[1], tenant = v[2], state = v[3], lock = v[4], replay = v[5]}
  elseif t == 'string' then
    local ok, doc = pcall(cjson.decode, redis.call('GET', k))
    if not ok or type(doc) ~= 'table' or doc[1] ~= nil then return nil, 'notARecord' end
    return {key = scalar(doc[f_key]), tenant = scalar(doc[f_tenant]), state = scalar(doc[f_state]),
            lock = scalar(doc[f_lock]), replay = scalar(doc[f_replay])}
  elseif t == 'none' then
    return nil, 'vanished'
  end
  return nil, 'notARecord'
end

local function judge(rec, k)
  if type(rec.state) ~= 'string' or rec.state ~= in_progress then return 'notInProgress' end
  local exp = parse_time(rec.lock)
  if not exp then return 'unparseableLockTime' end
  if now - exp <= grace then return 'lockNotExpired' end
  if want_tenant and rec.tenant ~= want_tenant then return 'filteredOut' end
  local rk = k
  if type(rec.key) == 'string' and rec.key ~= '' then rk = rec.key end
  if want_prefix and string.sub(rk, 1, #want_prefix) ~= want_prefix then return 'filteredOut' end
  if min_replay then
    local n = as_int(rec.replay)
    if not n or n < min_replay then return 'filteredOut' end
  end
  return 'stale', exp, rk
end

local counts = {notInProgress = 0, lockNotExpired = 0, unparseableLockTime = 0, filteredOut = 0,
                notARecord = 0, vanished = 0}
local sample, tenants, tenant_order = {}, {}, {}
local scanned, n, capped, steps = 0, 0, 0, 0
local oldest, newest = false, false
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', batch)
  cursor, steps = r[1], steps + 1
  for _, k in ipairs(r[2]) do
    scanned = scanned + 1
    local rec, why = read(k)
    local exp, rk
    if rec then why, exp, rk = judge(rec, k) end
    if why == 'stale' then
      if n >= budget then
        capped = capped + 1
      else
        if mode == 'purge' then redis.call('UNLINK', k) end
        n = n + 1
        digest_add(k)
        if not oldest or exp < oldest then oldest = exp end
        if not newest or exp > newest then newest = exp end
        local tenant = rec.tenant
        if type(tenant) == 'number' then tenant = tostring(tenant) end
        local tkey = tenant or '\0'
        if not tenants[tkey] then tenants[tkey] = 0; tenant_order[#tenant_order + 1] = tkey end
        tenants[tkey] = tenants[tkey] + 1
        if #sample < room then
          local replay = as_int(rec.replay)
          if replay then replay = string.format('%d', replay) else replay = false end
          sample[#sample + 1] = {k, rk, tenant or false, string.format('%.3f', exp), replay}
        end
      end
    else
      counts[why] = counts[why] + 1
    end
  end
until cursor == '0' or scanned >= batch or steps >= max_steps or capped > 0
local tflat = {}
for _, t in ipairs(tenant_order) do tflat[#tflat + 1] = t; tflat[#tflat + 1] = tenants[t] end
local function num(x) if x then return string.format('%.3f', x) end return false end
return {cursor, scanned, {counts.notInProgress, counts.lockNotExpired, counts.unparseableLockTime, counts.filteredOut,
         counts.notARecord, counts.vanished}, n, capped, sample, string.format('%.0f', dig),
        num(oldest), num(newest), tflat}
"""
