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
local pcall = pcall
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


-- client: the dingtalk client (its request method does the call, with
-- retries); policy: its retry policy (for the clock and the sleep).
function _M.new(client, app_key, app_secret, policy)
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

  -- One fetch, of generation g, whose retries start no later than limit.
  local function fetch(g, limit)
    local function beat(s)
      if fetching == g then lease = policy.now() + s + _M.SLACK end
    end
    local ok, done_, res = pcall(client.request, client, _M.PATH, body, nil,
                                 { auth = false, limit = limit, beat = beat })
    if not ok then error(done_, 0) end
    if not done_ then return nil, res end
    local t, ttl = res.accessToken, res.expireIn
    if type(t) ~= "string" or t == "" or #t > _M.MAX_TOKEN or str_find(t, "[%z\1-\31\127]") then
      return nil, protocol("protocol.no_token", "the access-token answer has no usable accessToken")
    end
    if type(ttl) ~= "number" or ttl ~= ttl or ttl <= 0 or ttl > 31536000 then
      ttl = _M.MIN_LIFETIME
    end
    local now = policy.now()
    token = t
    expires_at = now + ttl
    refresh_at = expires_at - math_min(_M.MARGIN, ttl * _M.MARGIN_FRACTION)
    return t
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
