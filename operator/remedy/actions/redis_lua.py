"""Server-side scanning for the bulk Redis actions: SCAN, tally and (optionally) UNLINK in Lua.

Why on the server: a Python client spends most of a million-key pass parsing replies (every
name crosses the wire, twice for a delete), so even a pipelined redis-py loop is slower than
``redis-cli --scan | xargs redis-cli unlink``. A script that runs a few SCAN steps itself and
returns only a count, a digest and the first names needs one small reply per ~1,000 keys.

Each call is bounded: at most ``MAX_SCAN_STEPS`` SCAN steps of COUNT ``batchSize``, and it stops
once ``batchSize`` keys matched, so one call holds Redis's single thread for about a
millisecond per 1,000 keys. The cursor goes back to the client between calls. Scripts read and
delete keys not declared in KEYS (SCAN finds them), which standalone Redis allows; Redis Cluster
would need per-node runs and is not supported by these actions.

The digest is ``keyset``'s: the sum modulo 2**52 of the first 52 bits of SHA-1 of each key name
(reduced after every add, so Lua's doubles stay exact); the client adds each call's sum. One
52-bit sum, not more: every further slice costs about a quarter of a counting pass.
"""

from __future__ import annotations

from typing import Any

MAX_SCAN_STEPS = 8

# Shared prologue: effects replication (needed before Redis 5 for writes after SCAN) and the digest.
PROLOGUE_LUA = r"""
if redis.replicate_commands then redis.replicate_commands() end
local dig = 0
local LIMB = 4503599627370496
local function digest_add(k)
  dig = (dig + tonumber(string.sub(redis.sha1hex(k), 1, 13), 16)) % LIMB
end
"""

# ARGV: cursor, pattern, batch, max_steps, sample_room, budget, mode ('count' | 'unlink'), fence
# Returns {cursor, matched, unlinked, capped, sample, digest, spared}. ``budget`` bounds how many
# names this call tallies (and, in unlink mode, deletes); ``capped`` counts matches beyond it.
# ``fence`` ('' for none) is the server's TIME in seconds when the plan was made: a key whose
# OBJECT IDLETIME says it was written after that (less idle than the time since the plan, with
# one second of slack for Redis's LRU clock, which ticks in whole seconds from a cached clock)
# is ``spared``: neither tallied nor deleted. Where idle time is not tracked (an LFU
# maxmemory-policy) a fenced key cannot be told apart and is spared too. OBJECT IDLETIME does
# not touch the key.
MATCH_LUA = PROLOGUE_LUA + r"""
local cursor, pattern = ARGV[1], ARGV[2]
local batch, max_steps, room, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local unlink = ARGV[7] == 'unlink'
local fence = tonumber(ARGV[8])
local min_idle = 0
if fence then min_idle = tonumber(redis.call('TIME')[1]) - fence - 1 end
local n, unlinked, capped, steps, spared, sample = 0, 0, 0, 0, 0, {}
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', batch)
  cursor, steps = r[1], steps + 1
  for _, k in ipairs(r[2]) do
    local old = true
    if min_idle > 0 then
      local idle = redis.pcall('OBJECT', 'IDLETIME', k)
      old = type(idle) == 'number' and idle >= min_idle
    end
    if not old then
      spared = spared + 1
    elseif n >= budget then
      capped = capped + 1
    else
      n = n + 1
      digest_add(k)
      if #sample < room then sample[#sample + 1] = k end
      if unlink then unlinked = unlinked + redis.call('UNLINK', k) end
    end
  end
until cursor == '0' or n >= batch or steps >= max_steps or capped > 0
return {cursor, n, unlinked, capped, sample, string.format('%.0f', dig), spared}
"""


def fold_digest(text: Any) -> int:
    """The digest sum of one call (sent as a decimal string: an integer reply would be exact
    too, but a string cannot be truncated by a client's number handling)."""
    return int(text)
