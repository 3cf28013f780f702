-- Access tokens from app credentials: POST /v1.0/oauth2/accessToken with
-- {"appKey", "appSecret"} answers {"accessToken", "expireIn"} (seconds).
--
-- One manager per client. It caches the token, refreshes it ahead of
-- expiry, makes one fetch at a time, and keeps the secret and the token in
-- upvalues (never in a table a caller might print). Its redact() takes the
-- secret out of any error text, whichever call produced it.
local core = require "dingtalk.core"
local cjson = require "cjson"

local math_min = math.min
local pcall = pcall
local error = error
local pairs = pairs
local type = type
local str_find = string.find
local str_gsub = string.gsub

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


local function plain(s)
  return (str_gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end


-- Replaces every occurrence of each secret in the string fields of err.
function _M.redact(err, secrets)
  if type(err) ~= "table" then return err end
  for k, v in pairs(err) do
    if type(v) == "string" then
      for i = 1, #secrets do
        local s = secrets[i]
        if s and #s >= SECRET_MIN and str_find(v, s, 1, true) then
          v = str_gsub(v, plain(s), "[redacted]")
        end
      end
      err[k] = v
    end
  end
  return err
end


-- client: the dingtalk client (its request method does the call, with
-- retries); policy: its retry policy (for the clock and the sleep).
function _M.new(client, app_key, app_secret, policy)
  local body = json.encode{ appKey = app_key, appSecret = app_secret }
  local secrets = { app_secret }
  local token, refresh_at, expires_at
  local fetching = false
  local tm = { app_key = app_key }

  local function yields()
    if policy.sleep_yields ~= nil then return policy.sleep_yields end
    return require("dingtalk.retry").default_sleep_yields()
  end

  local function fetch()
    local ok, done, res = pcall(client.request, client, _M.PATH, body, nil, { auth = false })
    if not ok then error(done, 0) end
    if not done then return nil, res end
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

  -- The cached token, or a fresh one: token | nil, error.
  function tm.get()
    local now = policy.now()
    if token and now < refresh_at then return token end
    if fetching then
      -- Another coroutine (nginx) is fetching. A still valid token serves
      -- meanwhile; otherwise wait for that fetch, never start a second one.
      if token and now < expires_at then return token end
      if not yields() then
        return nil, core.error{ kind = "argument", code = "argument.reentrant", field = "client",
          message = "an access-token fetch is already running on this client", retryable = false }
      end
      local deadline = now + policy.deadline / 1000 + 60
      while fetching and policy.now() < deadline do policy.sleep(_M.POLL) end
      if token and policy.now() < expires_at then return token end
      return nil, core.error{ kind = "transport", code = "transport.token_wait",
        message = "the access-token fetch of another caller did not finish", retryable = true }
    end
    fetching = true
    local ok, t, err = pcall(fetch)
    fetching = false
    if not ok then error(t, 0) end
    if t then return t end
    -- A refresh ahead of expiry failed: the current token still works.
    if token and policy.now() < expires_at then return token end
    return nil, err
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
