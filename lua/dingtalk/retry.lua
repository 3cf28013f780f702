-- Retry policy: which failures are tried again, how long to wait (capped
-- exponential backoff with full jitter, at least the server's Retry-After),
-- and the clock the waits use. The loop itself is client:request.
--
-- Waiting: inside nginx, where cosockets work, ngx.sleep yields to the
-- event loop; everywhere else core.sleep blocks the calling thread (plain
-- Lua has no sleep, and the module does not depend on LuaSocket). The
-- clock is injectable (options sleep/now/random) so specs can check the
-- arithmetic without waiting.
local core = require "dingtalk.core"
local check = require "dingtalk.check"

local math_min = math.min
local math_max = math.max
local math_random = math.random
local pcall = pcall
local type = type
local str_find = string.find
local str_lower = string.lower
local str_match = string.match
local fail = check.fail
local redact = core.redact

local _M = {}

-- Defaults (documented in the README).
_M.DEFAULT_RETRIES = 3            -- retries after the first attempt: 4 attempts at most
_M.DEFAULT_BASE_DELAY = 200       -- ms, the backoff before the first retry (upper bound)
_M.DEFAULT_MAX_DELAY = 5000       -- ms, cap of one backoff wait (a Retry-After may ask more)
_M.DEFAULT_DEADLINE = 30000       -- ms from the first failure: no retry starts after it

_M.OPTIONS = {
  retries = true, retry_base_delay = true, retry_max_delay = true, retry_deadline = true,
  sleep = true, now = true, random = true,
}

-- lua-nginx-module phases where ngx.sleep may yield.
local YIELDING_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true,
  timer = true, ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local function in_cosocket_phase()
  local n = ngx   -- luacheck: ignore 113 (looked up per call: absent outside nginx)
  return type(n) == "table" and type(n.get_phase) == "function"
      and YIELDING_PHASES[n.get_phase()] == true, n
end

function _M.default_sleep(seconds)
  local yes, n = in_cosocket_phase()
  if yes then return n.sleep(seconds) end
  return core.sleep(seconds)
end

function _M.default_now()
  local yes, n = in_cosocket_phase()
  if yes then
    n.update_time()
    return n.now()
  end
  return core.now()
end

-- true when default_sleep lets other coroutines run while it waits.
function _M.default_sleep_yields()
  return (in_cosocket_phase())
end


local function whole(opts, name, lo, hi, default)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < lo or v > hi or v % 1 ~= 0 then
    fail("argument.option", name, name .. " must be a whole number from " .. lo .. " to " .. hi)
  end
  return v
end

local function func(opts, name)
  local v = opts[name]
  if v ~= nil and type(v) ~= "function" then
    fail("argument.option", name, name .. " must be a function")
  end
  return v
end

-- Checks the retry options of dingtalk.new and returns the policy.
function _M.options(opts)
  local p = {
    retries = whole(opts, "retries", 0, 100, _M.DEFAULT_RETRIES),
    base = whole(opts, "retry_base_delay", 0, 3600000, _M.DEFAULT_BASE_DELAY),
    cap = whole(opts, "retry_max_delay", 0, 3600000, _M.DEFAULT_MAX_DELAY),
    deadline = whole(opts, "retry_deadline", 0, 86400000, _M.DEFAULT_DEADLINE),
    -- Outside nginx (no `ngx` at all, for the life of the process) the C
    -- clock serves directly, without asking for the phase on every call.
    sleep = func(opts, "sleep") or (rawget(_G, "ngx") and _M.default_sleep or core.sleep),
    now = func(opts, "now") or (rawget(_G, "ngx") and _M.default_now or core.now),
    random = func(opts, "random") or math_random,
  }
  p.sleep_yields = opts.sleep ~= nil or nil   -- nil: ask default_sleep_yields per call
  return p
end


-- Failures worth another attempt: what the core marks retryable (5xx, 429,
-- Forbidden.AccessDenied.Qps*, timeouts, refused or dropped connections).
-- Argument and protocol errors never are.
function _M.retryable(err)
  return type(err) == "table" and err.retryable == true
     and err.kind ~= "argument" and err.kind ~= "protocol"
end


-- Seconds to wait after `failed` failed attempts (1 = after the first):
-- uniform in [0, min(cap, base * 2^(failed-1))], and never less than the
-- server's Retry-After. Float arithmetic throughout: a huge Retry-After
-- (the core hands it over clamped, as an integer on 5.3/5.4) must stay
-- huge, not wrap around into a short or negative wait.
function _M.delay(p, failed, err)
  local ceiling = math_min(p.cap, p.base * 2.0 ^ (failed - 1))
  local r = p.random()
  if type(r) ~= "number" or r < 0 or r > 1 then r = 1 end
  local ms = ceiling * r
  local ra = type(err) == "table" and err.retry_after
  if type(ra) == "number" and ra >= 0 then ms = math_max(ms, ra * 1000.0) end
  return ms / 1000.0
end


-- The platform refused the access token itself (invalid or expired): a
-- fresh one may help. A permission error (AccessTokenPermissionDenied)
-- is not this: a new token has the same scopes.
local TOKEN_CODES = { InvalidAuthentication = true, InvalidAccessToken = true,
                      AccessTokenExpired = true, ["40014"] = true, ["42001"] = true }

function _M.token_rejected(err)
  if type(err) ~= "table" then return false end
  if err.kind == "http" then return err.status == 401 end
  if err.kind ~= "api" or type(err.code) ~= "string" then return false end
  if TOKEN_CODES[err.code] then return true end
  -- a numeric JSON code read as a float (5.3/5.4 cores before integral
  -- codes became integer strings): 40014.0 is 40014
  local n = str_match(err.code, "^(%d+)%.0$")
  if n and TOKEN_CODES[n] then return true end
  local c = str_lower(err.code)
  return str_find(c, "token", 1, true) ~= nil and str_find(c, "permission", 1, true) == nil
     and (str_find(c, "expire", 1, true) ~= nil or str_find(c, "invalid", 1, true) ~= nil)
end


local function hook(client, ev)
  local f = client._on_request
  if f then pcall(f, ev) end    -- a failing hook never fails the call
end


-- client:request(path, body, result_field, ropts) -> true, result | nil, err
-- One logical call: attempts over client:post (the transport seam) with
-- retries, the token from the client's app credentials when none is given
-- (refreshed once, and the call repeated once, if the platform refuses
-- it), the on_request hook after every attempt, and `attempts` on the
-- final error. ropts: token (explicit), auth = false (no token at all:
-- the token call), retries (this call's own count), method; and for the
-- token manager's fetch: limit (no retry starts after this clock time)
-- and beat (told, before each post or wait, how long it may take).
local NO_OPTS = {}

function _M.request(client, path, body, result_field, ropts)
  ropts = ropts or NO_OPTS
  return _M.run(client, path, body, result_field, ropts.token, ropts.auth, ropts.retries, ropts.method,
                ropts.limit, ropts.beat)
end


-- One deadline per logical call. Retries stop at retry_deadline from the
-- first failure, as for a call without app credentials. A call with a
-- managed token also has a limit, start + timeout + retry_deadline (from
-- the clock read the token lookup makes anyway): no attempt of it starts
-- after the limit, a token fetch inside it (or the wait for another
-- caller's fetch) stops retrying a timeout before it, so the call's own
-- attempt still fits, and the refresh after a refused token happens only
-- while the fetch and the repeat fit. So a call lasts at most timeout +
-- retry_deadline + timeout, token fetches and refreshes included.
local function attempts(client, path, body, result_field, token, auth, retries, method, first_err,
                        limit, beat)
  local p = client._retry
  local tokens = client._tokens
  local managed = auth ~= false and token == nil and tokens ~= nil
  local max_attempts = (retries or p.retries) + 1
  -- retries = 0: the request goes on the wire at most once (the transport
  -- makes no transparent re-send either)
  local once = max_attempts == 1
  -- Set at the first failure: a call that succeeds at once (nearly all of
  -- them) reads no clock here.
  local deadline
  -- Without an on_request hook a successful attempt needs no event: no
  -- clock reads around it, no status lookup, no table.
  local watch = client._on_request ~= nil
  local attempt, failed, refreshed = 0, 0, false
  while true do
    if managed then
      local err
      token, err, limit = tokens.get(limit)
      if not token then return nil, err end
    end
    attempt = attempt + 1
    local seq0 = watch and client._core.last and client._core:last()
    local t0 = watch and p.now()
    local ok, res
    if first_err then   -- the first attempt, already made by _M.run
      ok, res, first_err = false, first_err, nil
    else
      if beat then beat(p.timeout) end
      ok, res = client:post(path, token, body, result_field, method, once)
    end
    if ok and not watch then return true, res end
    local duration = t0 and (p.now() - t0) * 1000
    local ev = { method = method or "POST", path = path, attempt = attempt, duration = duration, ok = ok == true }
    if ok then
      if seq0 then
        local seq, status, rid = client._core:last()
        if seq ~= seq0 then ev.status, ev.request_id = status, rid end
      end
      ev.status = ev.status or 200
      -- a request id header may echo what was sent: the event holds
      -- neither the token nor the app secret
      if ev.request_id then
        if tokens then tokens.redact(ev) else ev.request_id = redact(ev.request_id, token) end
      end
      hook(client, ev)
      return true, res
    end
    if tokens then tokens.redact(res) end
    ev.status, ev.request_id, ev.code, ev.kind = res.status, res.request_id, res.code, res.kind
    local again, wait = false, 0
    local now
    if managed and not refreshed and _M.token_rejected(res) then
      -- one refresh and one repeat, on top of the retry budget, while both
      -- fit before the call's limit
      refreshed = true
      tokens.invalidate(token)
      now = p.now()
      if not limit or now + p.timeout <= limit then
        max_attempts = max_attempts + 1
        again = true
      end
    elseif _M.retryable(res) and attempt < max_attempts then
      failed = failed + 1
      wait = _M.delay(p, failed, res)
      now = p.now()
      if not deadline then
        deadline = now + p.deadline / 1000
        if limit and limit < deadline then deadline = limit end
      end
      again = now + wait <= deadline
    end
    if again then ev.retry_in = wait end
    hook(client, ev)
    if not again then
      if type(res) == "table" then res.attempts = attempt end
      return nil, res
    end
    if wait > 0 then
      if beat then beat(wait) end
      p.sleep(wait)
    end
  end
end


function _M.run(client, path, body, result_field, token, auth, retries, method, limit, beat)
  -- Nearly every call: no hook to feed, no token to manage, and success at
  -- the first attempt. It costs one post and nothing else.
  if client._on_request == nil and (token ~= nil or client._tokens == nil or auth == false) then
    local ok, res = client:post(path, token, body, result_field, method,
                                (retries or client._retry.retries) == 0)
    if ok then return true, res end
    return attempts(client, path, body, result_field, token, auth, retries, method, res, limit, beat)
  end
  return attempts(client, path, body, result_field, token, auth, retries, method, nil, limit, beat)
end


-- The rest of a call whose first attempt failed elsewhere (core.clear_closure
-- makes the usual first attempt in C): the same loop from that error.
function _M.after_first(client, path, body, result_field, token, first_err)
  return attempts(client, path, body, result_field, token, nil, nil, nil, first_err)
end


return _M
