#!lua name=tokend
--[[
tokend's token semantics as a Redis 7 function library: the reference that
scripts/bench.sh measures tokend against. It is meant to be the best a
plain-Redis user would do: every operation is one FCALL (one round trip),
atomic (a function runs alone), O(1), and the state is split over keys so that
Redis's own TTLs carry the deadlines.

Load:   redis-cli FUNCTION LOAD REPLACE "$(cat scripts/tokens.lua)"
Call:   FCALL tokend_gen       1 <pool> <lifetime-ms> <token> [token ...]
        FCALL tokend_acquire   1 <pool> <lease-ms>          -> token | nil
        FCALL tokend_keepalive 1 <pool> <token>             -> ms of lifetime left
        FCALL tokend_unblock   1 <pool> <token>             -> 1
        FCALL tokend_del       1 <pool> <token>             -> 1 | 0
        FCALL_RO tokend_info   1 <pool> <token>             -> state, lifetime-left-ms, lease-left-ms, times-acquired

The pool name is the one key of every call; the function derives the pool's
keys from it, with the pool as the hash tag so they share a cluster slot:

  tk:{<pool>}:free         set     the free tokens
  tk:{<pool>}:t:<token>    hash    life = lifetime ms given by GEN, n = times
                                   acquired; the key's TTL *is* the lifetime:
                                   when it expires the token is dead
  tk:{<pool>}:l:<token>    string  the lease ms; the key's TTL *is* the lease:
                                   it exists <=> the token is assigned

Token ids are made by the client (a UUID v4, as a Python service does with
uuid.uuid4()) and passed to tokend_gen: Lua's math.random is not a source of
secrets, and generating ids client-side is what a plain-Redis user does.

What plain Redis cannot do here (limitations the benchmark reports, not
hides):
- A lease that ends does not move its token back to the free set: Redis
  deletes the lease key and publishes `expired` (with notify-keyspace-events
  Ex), and a separate listener process would have to SADD the token back: the
  old FastAPI design, with its races and its lost events when the listener is
  down. Until then the token is neither assigned nor free. The benchmark
  measures the request path (GEN, ACQUIRE, KEEPALIVE, UNBLOCK), which never
  waits for that listener.
- A lifetime that ends leaves the token's member in the free set; ACQUIRE
  pops and drops such dead members lazily (the loop below), so a pool with
  many dead tokens makes ACQUIRE slower.
- Expiry is Redis's key expiry: keys die lazily when touched or when the
  active expire cycle samples them (hz 10), so `expired` events for many keys
  due at once arrive late; bench.sh measures how late.
- An expired token cannot be told from one that never existed (no memory of
  expired tokens): both answer NOTOKEN. Blocking ACQUIRE (BLOCK) is not
  offered: a function cannot block.
]]

local function keys_of(pool)
  return 'tk:{' .. pool .. '}:'
end

local function duration(v, name)
  local n = tonumber(v)
  if not n or n <= 0 or n ~= math.floor(n) then
    return nil, redis.error_reply("ERR invalid expire time in '" .. name .. "' command")
  end
  return n
end

-- GEN: each token gets its hash (with the lifetime as TTL) and joins the free set.
local function gen(keys, args)
  local p = keys_of(keys[1])
  local life, err = duration(args[1], 'tokend_gen')
  if not life then return err end
  local out = {}
  for i = 2, #args do
    local t = args[i]
    local tk = p .. 't:' .. t
    redis.call('HSET', tk, 'life', life, 'n', 0)
    redis.call('PEXPIRE', tk, life)
    out[#out + 1] = t
  end
  -- SADD many at once, in chunks (unpack is limited by the Lua stack).
  local free = p .. 'free'
  local i = 2
  while i <= #args do
    local j = math.min(i + 999, #args)
    redis.call('SADD', free, unpack(args, i, j))
    i = j + 1
  end
  if #out == 1 then return out[1] end
  return out
end

-- ACQUIRE: a random free token (SPOP is uniform and O(1)), assigned with a
-- lease; cover rule: the lifetime is extended to the lease if shorter.
local function acquire(keys, args)
  local p = keys_of(keys[1])
  local lease, err = duration(args[1], 'tokend_acquire')
  if not lease then return err end
  local free = p .. 'free'
  while true do
    local t = redis.call('SPOP', free)
    if not t then return false end -- nil: none free
    local tk = p .. 't:' .. t
    local left = redis.call('PTTL', tk)
    if left ~= -2 then
      redis.call('SET', p .. 'l:' .. t, lease, 'PX', lease)
      redis.call('HINCRBY', tk, 'n', 1)
      if left < lease then redis.call('PEXPIRE', tk, lease) end
      return t
    end
    -- The token's lifetime ended while it was free: drop it, try another.
  end
end

-- KEEPALIVE: restarts the lifetime and, if assigned, the lease, from now,
-- with the durations they were given; then the cover rule.
local function keepalive(keys, args)
  local p = keys_of(keys[1])
  local t = args[1]
  local tk = p .. 't:' .. t
  local life = redis.call('HGET', tk, 'life')
  if not life then return redis.error_reply('NOTOKEN no such token in this pool') end
  life = tonumber(life)
  local lk = p .. 'l:' .. t
  local lease = redis.call('GET', lk)
  if lease then
    lease = tonumber(lease)
    redis.call('PEXPIRE', lk, lease)
    if lease > life then life = lease end
  end
  redis.call('PEXPIRE', tk, life)
  return life
end

-- UNBLOCK: assigned -> free; the lifetime goes on.
local function unblock(keys, args)
  local p = keys_of(keys[1])
  local t = args[1]
  if redis.call('EXISTS', p .. 't:' .. t) == 0 then
    return redis.error_reply('NOTOKEN no such token in this pool')
  end
  if redis.call('DEL', p .. 'l:' .. t) == 0 then
    return redis.error_reply('NOTASSIGNED the token is not assigned')
  end
  redis.call('SADD', p .. 'free', t)
  return 1
end

-- DEL: deletes the token in any state.
local function del(keys, args)
  local p = keys_of(keys[1])
  local t = args[1]
  local n = redis.call('DEL', p .. 't:' .. t)
  redis.call('DEL', p .. 'l:' .. t)
  redis.call('SREM', p .. 'free', t)
  return n
end

-- INFO: state, lifetime left, lease left (-1 when free), times acquired.
local function info(keys, args)
  local p = keys_of(keys[1])
  local t = args[1]
  local tk = p .. 't:' .. t
  local left = redis.call('PTTL', tk)
  if left == -2 then return redis.error_reply('NOTOKEN no such token in this pool') end
  local n = tonumber(redis.call('HGET', tk, 'n') or 0)
  local lease_left = redis.call('PTTL', p .. 'l:' .. t)
  local state = 'assigned'
  if lease_left == -2 then
    state = 'free'
    lease_left = -1
  end
  return { 'state', state, 'lifetime-left-ms', left, 'lease-left-ms', lease_left, 'times-acquired', n }
end

redis.register_function('tokend_gen', gen)
redis.register_function('tokend_acquire', acquire)
redis.register_function('tokend_keepalive', keepalive)
redis.register_function('tokend_unblock', unblock)
redis.register_function('tokend_del', del)
redis.register_function { function_name = 'tokend_info', callback = info, flags = { 'no-writes' } }
