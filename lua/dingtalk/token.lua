-- Access tokens from app credentials: POST /v1.0/oauth2/accessToken with
-- {"appKey", "appSecret"} answers {"accessToken", "expireIn"} (seconds).
--
-- One manager per client. It caches the token, refreshes it ahead of
-- expiry, makes one fetch at a time, and keeps the secret and the token in
-- upvalues (never in a table a caller might print). Its redact() takes the
-- secret and the token out of every string reachable from an error,
-- whichever call produced it.
local core = require "dingtalk.core"
local cjson = require "cjson"

local math_min = math.min
local math_ceil = math.ceil
local math_floor = math.floor
local os_time = os.time
local pcall = pcall
local tonumber = tonumber
local tostring = tostring
local str_sub = string.sub
local error = error
local pairs = pairs
local type = type
local str_find = string.find
local redact = core.redact

local json = cjson.new()

local _M = {}

_M.PATH = "/v1.0/oauth2/accessToken"
_M.MARGIN = 600            -- s: refresh this long before expiry ...
_M.MARGIN_FRACTION = 0.2   -- ... or this share of a shorter lifetime
_M.MIN_LIFETIME = 60       -- s assumed for a missing, zero or odd expireIn
_M.MAX_TOKEN = 1024
_M.POLL = 0.01             -- s between looks while another coroutine fetches
-- Fleets (a shared token cache, see new() and dingtalk.token_cache):
_M.KEY_PREFIX = "dingtalk:token:"
_M.CACHE_POLL = 0.02       -- s: first pause while another process fetches ...
_M.CACHE_POLL_MAX = 0.2    -- ... doubling up to this
_M.MAX_CACHE_ERROR = 200   -- bytes of a cache's error message kept in an event
-- The wall clock, for what is shared between processes and hosts (policy.now
-- is monotonic, meaningful only inside one process). Replaceable for specs.
_M.wall = os_time
-- A secret shorter than this cannot be told apart from ordinary text (as
-- the C core's DT_SECRET_MIN).
local SECRET_MIN = 6


local function protocol(code, message)
  return core.error{ kind = "protocol", code = code, message = message, retryable = false,
                     status = 200 }
end


local MAX_DEPTH = 32

-- Takes both secrets out of every string reachable from v (keys, values,
-- nested tables such as accessdenieddetail), in place; core.redact takes
-- out every fragment of 8 bytes or more of either. Tables nested deeper
-- than any error the core makes are dropped rather than searched.
local function scrub(v, a, b, depth, seen)
  local tv = type(v)
  if tv == "string" then return redact(v, a, b) end
  if tv ~= "table" or seen[v] then return v end
  if depth > MAX_DEPTH then return nil end
  seen[v] = true
  local renamed
  for k, x in pairs(v) do
    local y = scrub(x, a, b, depth + 1, seen)
    if y ~= x then v[k] = y end   -- an existing key: allowed during traversal
    local tk = type(k)
    if tk == "string" then
      local nk = redact(k, a, b)
      if nk ~= k then
        renamed = renamed or {}
        renamed[k] = nk
      end
    elseif tk == "table" then
      scrub(k, a, b, depth + 1, seen)
    end
  end
  if renamed then
    for k, nk in pairs(renamed) do
      v[nk], v[k] = v[k], nil
    end
  end
  return v
end


-- Takes secrets[1] and secrets[2] (either may be nil) out of err and
-- everything reachable from it.
function _M.redact(err, secrets)
  if type(err) ~= "table" then return err end
  local a, b = secrets[1], secrets[2]
  if a and #a < SECRET_MIN then a = nil end
  if b and #b < SECRET_MIN then b = nil end
  if not a and not b then return err end
  if not a then a, b = b, nil end
  return scrub(err, a, b, 0, {})
end


local function copy(err)
  local t = {}
  for k, v in pairs(err) do t[k] = v end
  return core.error(t)
end


-- The shared cache's key for one app at one endpoint: the hash of all three,
-- so two apps, two endpoints or a rotated secret never share an entry, and
-- the key does not hold the secret (nor can it be guessed from the key
-- without the secret).
function _M.cache_key(endpoint, app_key, app_secret)
  return _M.KEY_PREFIX .. core.sha256(endpoint .. "\0" .. app_key .. "\0" .. app_secret)
end


local function usable(t)
  return type(t) == "string" and t ~= "" and #t <= _M.MAX_TOKEN and not str_find(t, "[%z\1-\31\127]")
end


-- Cancellation. A fetch runs in some coroutine; that coroutine may never be
-- resumed (nginx: ngx.thread.kill, a client abort, ngx.exit; plain Lua: a
-- scheduler that drops a task waiting in a yielding sleep). Then nothing
-- clears "fetching", and every later caller would wait for a fetch that
-- will never end. Two defences:
--  * inside nginx (cosocket phases, the default sleep) the fetch runs in a
--    zero-delay timer, detached from the caller: killing the caller cannot
--    kill it, and the caller waits for it like any other caller would;
--  * everywhere, the fetcher keeps a lease: before each post and each wait
--    it records the clock time by which it will be back (plus a slack). A
--    waiter that finds the lease run out takes the fetch over. A fetcher
--    that does come back late still stores its token (it is valid) but no
--    longer speaks for the fetch in progress.
_M.SLACK = 1    -- s added to every lease (scheduling, a slow clock)


-- A fleet. With a shared cache (token_cache: get/set, optional lock/unlock
-- and delete; see dingtalk.token_cache) the fetch of this manager first
-- looks in the cache, and only one process of the fleet (the one that gets
-- the cache's lock) asks the platform, while the others poll the cache for
-- its result, each until its own call's limit (then it fetches itself).
-- The entry holds the token and its wall-clock expiry and refresh times,
-- and lives in the store until the refresh time (expireIn minus the
-- margin), so the fleet refreshes once, ahead of expiry. A token the
-- platform refused is never taken from the cache again by this process;
-- the process that gets the lock next removes it (when it is still the
-- entry) and fetches: once for the fleet. A cache that raises, answers
-- nil + err (a timeout too) is never fatal: the fetch goes on without it,
-- and the failure rides on the next on_request event of the client as
-- cache_error = { op =, message = } (redacted).


-- client: the dingtalk client (its request method does the call, with
-- retries); policy: its retry policy (for the clock and the sleep);
-- cache: the optional shared token cache (checked by the client).
function _M.new(client, app_key, app_secret, policy, cache)
  local body = json.encode{ appKey = app_key, appSecret = app_secret }
  local secrets = { app_secret }
  local token, refresh_at, expires_at
  -- fetching: the generation of the fetch in progress, or false; lease:
  -- when its fetcher must be back; done/last_err: the newest generation
  -- that ended, and its error when it failed
  local fetching, lease = false, nil
  local gen, done, last_err = 0, 0, nil
  local tm = { app_key = app_key }

  local function yields()
    if policy.sleep_yields ~= nil then return policy.sleep_yields end
    return require("dingtalk.retry").default_sleep_yields()
  end

  -- s: one attempt at most (client timeout), and a call's whole span
  local attempt_max = policy.timeout or 10
  local span = attempt_max + policy.deadline / 1000

  ---------------------------------------------------------------------------
  -- The shared cache. Every call into it is protected: an error (raised, or
  -- nil + err) is kept for the next event and makes the caller go on
  -- without the cache.
  local key = cache and _M.cache_key(client.endpoint, app_key, app_secret)
  local lock_key = key and key .. ":lock"
  local rejected        -- the last token the platform refused here
  local cache_error     -- { op, message } waiting for the next event

  if cache and client._on_request then
    local hook = client._on_request
    client._on_request = function(ev)
      if cache_error then
        -- once more with the token of now (a store may have quoted it)
        cache_error.message = redact(cache_error.message, app_secret, token)
        ev.cache_error, cache_error = cache_error, nil
      end
      return hook(ev)
    end
  end

  local function failed(op, err)
    local ok, msg = pcall(tostring, type(err) == "table" and err.message or err)
    msg = str_sub(ok and msg or "the cache failed", 1, _M.MAX_CACHE_ERROR)
    cache_error = { op = op, message = redact(msg, app_secret, token) or "the cache failed" }
  end

  -- v, true when it failed
  local function call(op, ...)
    local ok, v, err = pcall(cache[op], cache, ...)
    if not ok then failed(op, v) return nil, true end
    if v == nil and err ~= nil then failed(op, err) return nil, true end
    return v
  end

  -- The entry: token, wall expiry, wall refresh time | nil (none, or not
  -- usable: expired, due, garbled, refused here) | nil, true (failed).
  -- state: "rejected" when the entry holds the token refused here.
  local function read()
    local v, bad = call("get", key)
    if bad then return nil, nil, nil, true end
    if type(v) ~= "string" then return nil end      -- a miss (ngx.null too)
    local ok, e = pcall(json.decode, v)
    if not ok or type(e) ~= "table" then return nil end
    local t, exp, ref = e.token, tonumber(e.expires_at), tonumber(e.refresh_at)
    if not usable(t) or not exp or not ref then return nil end
    if t == rejected then return nil, nil, nil, false, "rejected" end
    local wall = _M.wall()
    if ref <= wall or exp <= wall or exp > wall + 31536000 then return nil end
    return t, exp, ref
  end

  local function adopt(t, exp, ref)
    local wall, now = _M.wall(), policy.now()
    token = t
    expires_at = now + (exp - wall)
    refresh_at = now + (math_min(ref, exp) - wall)
    return t
  end

  local function store(t, ttl, margin)
    local life = math_floor(ttl - margin)   -- s in the store: until the refresh
    if life < 1 then return end
    local wall = _M.wall()
    call("set", key, json.encode{ token = t, expires_at = wall + ttl, refresh_at = wall + life }, life)
  end

  local function unlock()
    if cache.unlock then call("unlock", lock_key) end
  end

  -- Before a fetch: the fleet's token (adopted) | nil, held (fetch it
  -- yourself; held: with the fleet's lock). Waits while another process
  -- holds the lock, polling the cache, until `limit`.
  local function fleet(limit, beat)
    local wait = _M.CACHE_POLL
    while true do
      beat(attempt_max)
      local t, exp, ref, bad = read()
      if t then return adopt(t, exp, ref) end
      if bad or not cache.lock then return nil end
      local got, lbad = call("lock", lock_key, math_ceil(attempt_max + _M.SLACK))
      if lbad then return nil end
      if got then
        -- look again: the holder before us may have stored it meanwhile
        local t2, exp2, ref2, _, state = read()
        if t2 then
          unlock()
          return adopt(t2, exp2, ref2)
        end
        -- the refused token is still the entry: nobody else may take it
        if state == "rejected" and cache.delete then call("delete", key) end
        return nil, true
      end
      -- another process fetches: a token still valid here serves meanwhile
      local now = policy.now()
      if token and now < expires_at then return token end
      if now + wait > limit then return nil end   -- then fetch, inside the call's limit
      beat(wait)
      policy.sleep(wait)
      wait = math_min(wait * 2, _M.CACHE_POLL_MAX)
    end
  end

  ---------------------------------------------------------------------------

  -- One fetch from the platform (and into the cache).
  local function ask(limit, beat)
    local ok, done_, res = pcall(client.request, client, _M.PATH, body, nil,
                                 { auth = false, limit = limit, beat = beat })
    if not ok then error(done_, 0) end
    if not done_ then return nil, res end
    local t, ttl = res.accessToken, res.expireIn
    if not usable(t) then
      return nil, protocol("protocol.no_token", "the access-token answer has no usable accessToken")
    end
    if type(ttl) ~= "number" or ttl ~= ttl or ttl <= 0 or ttl > 31536000 then
      ttl = _M.MIN_LIFETIME
    end
    local now = policy.now()
    local margin = math_min(_M.MARGIN, ttl * _M.MARGIN_FRACTION)
    token = t
    expires_at = now + ttl
    refresh_at = expires_at - margin
    if t == rejected then rejected = nil end
    if cache then store(t, ttl, margin) end
    return t
  end

  -- One fetch, of generation g, whose retries start no later than limit:
  -- from the fleet's cache when there is one, else from the platform.
  local function fetch(g, limit)
    local function beat(s)
      if fetching == g then lease = policy.now() + s + _M.SLACK end
    end
    if not cache then return ask(limit, beat) end
    local t, held = fleet(limit, beat)
    if t then return t end
    local ok, r, err = pcall(ask, limit, beat)
    if held then unlock() end
    if not ok then error(r, 0) end
    return r, err
  end

  -- Runs fetch g and records how it ended; raises what fetch raised.
  local function run(g, limit)
    local ok, t, err = pcall(fetch, g, limit)
    if g > done then
      -- a fetch that raised leaves no error for waiters: they fetch
      -- themselves, and meet the error in their own call
      done = g
      last_err = ok and err or nil
    end
    if fetching == g then fetching, lease = false, nil end
    if not ok then error(t, 0) end
    return t, err
  end

  local function begin(deadline)
    gen = gen + 1
    fetching = gen
    -- until its first post returns
    lease = policy.now() + attempt_max + _M.SLACK
    return gen, deadline - attempt_max
  end

  -- Inside nginx: the fetch in a timer of its own. false when no timer
  -- could be made (the caller then fetches itself).
  local function detach(deadline)
    local n = ngx   -- luacheck: ignore 113 (only inside nginx)
    if policy.sleep_yields ~= nil or type(n) ~= "table" or type(n.timer) ~= "table" then
      return false
    end
    local g, limit = begin(deadline)
    local ok = n.timer.at(0, function(premature)
      if premature then   -- nginx is exiting: this fetch ends here
        if g > done then done, last_err = g, core.error{ kind = "transport", code = "transport.token_wait",
          message = "the access-token fetch was cut short (nginx is exiting)", retryable = true } end
        if fetching == g then fetching, lease = false, nil end
        return
      end
      pcall(run, g, limit)
    end)
    if not ok then
      if fetching == g then fetching, lease = false, nil end
      return false
    end
    return g
  end

  -- Waits for fetch g: token | nil, error | false (take it over: its
  -- fetcher did not come back in time).
  local function await(g, deadline)
    while true do
      if fetching ~= g then
        if done >= g then
          if token and policy.now() < expires_at then return token end
          if last_err and done == g then return nil, copy(last_err) end
        end
        return false
      end
      local now = policy.now()
      if lease and now > lease then return false end
      if now >= deadline then
        return nil, core.error{ kind = "transport", code = "transport.token_wait",
          message = "the access-token fetch of another caller did not finish in time", retryable = true }
      end
      policy.sleep(_M.POLL)
    end
  end

  -- The cached token, or a fresh one: token | nil, error, and the call's
  -- limit (a clock time; made here, start + timeout + retry_deadline, on
  -- the call's first lookup). No fetch or wait goes past it.
  function tm.get(deadline)
    local now = policy.now()
    if not deadline then deadline = now + span end
    if token and now < refresh_at then return token, nil, deadline end
    -- a few rounds at most: each one ends a fetch or takes one over
    for _ = 1, 4 do
      if fetching and not (lease and now > lease) then
        -- Another caller is fetching. A still valid token serves
        -- meanwhile; otherwise wait for that fetch, never start a second one.
        if token and now < expires_at then return token, nil, deadline end
        if not yields() then
          return nil, core.error{ kind = "argument", code = "argument.reentrant", field = "client",
            message = "an access-token fetch is already running on this client", retryable = false },
            deadline
        end
        local t, err = await(fetching, deadline)
        if t ~= false then return t, err, deadline end
      else
        -- detached where the caller may be killed (nginx), else in the caller
        local g = yields() and detach(deadline)
        if g then
          local t, err = await(g, deadline)
          if t ~= false then return t, err, deadline end
        else
          local t, err = run(begin(deadline))
          if t then return t, nil, deadline end
          -- A refresh ahead of expiry failed: the current token still works.
          if token and policy.now() < expires_at then return token, nil, deadline end
          return nil, err, deadline
        end
      end
      now = policy.now()
      if token and now < refresh_at then return token, nil, deadline end
    end
    return nil, core.error{ kind = "transport", code = "transport.token_wait",
      message = "the access-token fetch did not finish", retryable = true }, deadline
  end

  -- The platform refused `t`: forget it, so the next get() fetches.
  function tm.invalidate(t)
    if t == token then token = nil end
    -- never taken from the shared cache again (see fleet)
    if cache then rejected = t end
  end

  function tm.redact(err)
    secrets[2] = token
    return _M.redact(err, secrets)
  end

  -- For tests and introspection: seconds until refresh and expiry.
  function tm.state()
    if not token then return nil end
    local now = policy.now()
    return refresh_at - now, expires_at - now
  end

  return tm
end


return _M
