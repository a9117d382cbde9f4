//! The Lua scripts the store runs. Each touches the keys of one bucket (one hash tag), so each runs on one Redis
//! Cluster slot; times are the server's (`TIME`) unless a caller clock is passed for deterministic tests.

pub(crate) const BUCKET_LUA: &str = r#"
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local rate = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local pending = tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local take = tonumber(ARGV[6])
local want = tonumber(ARGV[7])
local h = redis.call('HMGET', KEYS[1], 'b', 't')
local bal = tonumber(h[1])
local ts = tonumber(h[2])
if bal == nil or ts == nil then bal = cap; ts = now end
if now > ts then
  bal = math.min(cap, bal + (now - ts) * rate)
  ts = now
end
bal = math.min(cap, bal - pending)
local granted = -1
local wait = 0
if take >= 0 then
  if bal + 1e-9 >= need then
    granted = math.max(take, math.min(want, bal))
    bal = bal - granted
  elseif rate > 0 then
    wait = (need - bal) / rate
  else
    wait = -1
  end
end
redis.call('HSET', KEYS[1], 'b', string.format('%.17g', bal), 't', string.format('%.17g', ts))
local ttl = 86400
if rate > 0 then ttl = math.min(86400, (cap - bal) / rate + 60) end
redis.call('EXPIRE', KEYS[1], math.ceil(ttl))
return {string.format('%.17g', granted), string.format('%.17g', bal), string.format('%.17g', wait)}
"#;

/// ARGV: member ('' = count only), cap, ttl ms, then members to remove first.
pub(crate) const SLOTS_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = redis.call('ZCARD', KEYS[1])
if ARGV[1] == '' then return open end
if open < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
  return -1
end
return open
"#;

/// ARGV: ttl ms, members to keep alive.
pub(crate) const HEARTBEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 1000)
return 1
"#;

/// ARGV: agent id, ttl ms. Returns the agents alive.
pub(crate) const AGENTS_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return redis.call('ZCARD', KEYS[1])
"#;
