-- Handler of examples/openresty/nginx.conf: clears a bot's quick entries
-- and turns the module's error table into a JSON answer.
--
--   POST /bots/<robotCode>/clear-plugins
--   200 {"cleared":true|false}
--   4xx/5xx {"error":{"kind":..,"code":..,"message":..,"status":..,
--                     "request_id":..,"retryable":..,"retry_after":..}}
--
-- It runs in the content phase, so the module talks to DingTalk over
-- cosockets: the worker keeps serving other requests while it waits.
-- luacheck: globals ngx (nginx provides it; ngx.status and ngx.header are set)
local dingtalk = require "dingtalk"
local cjson = require "cjson.safe"

local ngx = ngx
local os_getenv = os.getenv
local pcall = pcall
local tostring = tostring

local _M = {}

local endpoint, token, app_key, app_secret
local client     -- one per worker, made on first use

-- init_by_lua: read the configuration; requiring "dingtalk" above already
-- loaded the C core in the master. No client and no call here: a
-- connection opened in the master would be shared by every worker.
function _M.init()
  endpoint = os_getenv("DINGTALK_ENDPOINT")
  if endpoint == "" then endpoint = nil end
  -- Either app credentials (the module fetches the token, refreshes it,
  -- and shares it between the workers through lua_shared_dict
  -- dingtalk_tokens), or a token managed elsewhere.
  app_key, app_secret = os_getenv("DINGTALK_APP_KEY"), os_getenv("DINGTALK_APP_SECRET")
  if app_key == "" or app_secret == "" then app_key, app_secret = nil, nil end
  token = os_getenv("DINGTALK_TOKEN")
  if token == "" then token = nil end
end

local function get_client()
  if not client then
    client = dingtalk.new{
      endpoint = endpoint,          -- nil: https://api.dingtalk.io
      timeout = 5000,               -- ms, the whole call
      connect_timeout = 2000,
      app_key = app_key,            -- nil: calls pass their token
      app_secret = app_secret,
      token_cache = app_key and dingtalk.token_cache.shared_dict(ngx.shared.dingtalk_tokens) or nil,
    }
  end
  return client
end

-- Our answer's status for a failed call: the caller's mistake, the
-- platform's refusal, or DingTalk (or the way to it) failing.
local function http_status(err)
  if err.kind == "argument" then return 400 end
  if err.code == "transport.timeout" then return 504 end
  if err.kind == "api" and err.status and err.status < 500 and not err.retryable then
    return 422                      -- e.g. invalidRequest.robotIsStop
  end
  if err.retryable then return 503 end
  return 502
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

function _M.handle(robot_code)
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return reply(405, { error = { code = "method_not_allowed", message = "use POST" } })
  end
  if not token and not app_key then
    return reply(500, { error = { code = "config",
      message = "set DINGTALK_APP_KEY and DINGTALK_APP_SECRET, or DINGTALK_TOKEN" } })
  end

  local ok, res = pcall(get_client().robot.clear_plugins,
                        { robotCode = ngx.unescape_uri(robot_code), token = not app_key and token or nil })
  if ok then
    return reply(200, { cleared = res })
  end
  if not dingtalk.is_error(res) then
    error(res, 0)                   -- a bug, not a DingTalk failure: let nginx log it
  end

  -- One line per failure, e.g.
  --   dingtalk: invalidRequest.robotIsStop (HTTP 400): The bot has been
  --   disabled by the organization [request 5F1E...]
  -- The token is never in it (the module redacts it from server text).
  ngx.log(res.retryable and ngx.WARN or ngx.ERR, "clear_plugins ", robot_code, ": ", tostring(res))

  if res.retryable and res.retry_after then
    ngx.header["Retry-After"] = res.retry_after
  end
  return reply(http_status(res), { error = {
    kind = res.kind, code = res.code, message = res.message, status = res.status,
    request_id = res.request_id, retryable = res.retryable, retry_after = res.retry_after,
    field = res.field,
  } })
end

return _M
