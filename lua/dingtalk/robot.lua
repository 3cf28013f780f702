-- Robot operations: argument checks, the request body, and the call
-- through a client. One function per platform operation.
local check = require "dingtalk.check"
local core = require "dingtalk.core"
local cjson = require "cjson"
local retry_run = require("dingtalk.retry").run
local retry_after_first = require("dingtalk.retry").after_first
local plain_args = core.plain_args
local printable = core.printable

local error = error
local ipairs = ipairs
local next = next
local pairs = pairs
local pcall = pcall
local type = type

-- A private instance: the caller's cjson settings never change our bodies.
local json = cjson.new()

local _M = {}

-- Real codes are ~20 ASCII characters and tokens 32; the caps only keep an
-- absurd value from reaching the wire.
_M.MAX_ROBOT_CODE = 256
_M.MAX_TOKEN = 1024

-- quick entries: at most this many per set_plugins call, and field sizes
_M.MAX_PLUGINS = 100
_M.MAX_PLUGIN_NAME = 256
_M.MAX_PLUGIN_URL = 4096

local CLEAR_ARGS = { robotCode = true, token = true }
local SET_ARGS = { robotCode = true, token = true, pluginInfoList = true }
local ENTRY_KEYS = { name = true, icon = true, pcUrl = true, mobileUrl = true }


-- The token argument: required, unless the client gets tokens itself from
-- app credentials (then an explicit one still wins).
local function token_arg(client, args)
  if args.token == nil and client._tokens ~= nil then
    return nil
  end
  return check.string(args, "token", _M.MAX_TOKEN)
end


-- One call through the client's request layer (retries, managed tokens,
-- the on_request hook); raises the error table on failure.
local function request(client, path, token, body, result_field)
  local ok, res
  if client._retry then   -- a dingtalk client: straight into its retry loop
    ok, res = retry_run(client, path, body, result_field, token)
  else   -- a bare transport (tests, other hosts): one attempt
    ok, res = client:post(path, token, body, result_field)
  end
  if not ok then error(res, 0) end
  return res
end

-- The body for the last robot code: callers clear the same bot again and
-- again, and encoding it anew cost as much as all the other Lua work of a
-- call. A robot code is no secret; the token is never kept.
local last_code, last_body


-- clear_plugins{ robotCode =, token = } -> true | false
-- POST /v1.0/robot/plugins/clear; raises an error table on any failure.
function _M.clear_plugins(client, args)
  -- the usual call, checked in one C pass; anything else gets the full
  -- checks, which raise the precise argument error
  local code, token = plain_args(args, CLEAR_ARGS, "robotCode", _M.MAX_ROBOT_CODE, "token", _M.MAX_TOKEN)
  if not code then
    check.args(args, CLEAR_ARGS, "clear_plugins")
    code = check.string(args, "robotCode", _M.MAX_ROBOT_CODE)
    token = token_arg(client, args)
  end
  if code ~= last_code then
    last_body, last_code = json.encode{ robotCode = code }, code
  end
  if client._retry then   -- a dingtalk client: straight into its retry loop
    local ok, res = retry_run(client, "/v1.0/robot/plugins/clear", last_body, "result", token)
    if not ok then error(res, 0) end
    return res
  end
  return request(client, "/v1.0/robot/plugins/clear", token, last_body, "result")
end



local function protocol(code, message)
  return core.error{ kind = "protocol", code = code, message = message,
                     status = 200, retryable = false }
end


-- query_plugins{ robotCode =, token = } -> { {name=, icon=, pcUrl=, mobileUrl=}, ... }
-- POST /v1.0/robot/plugins/query. JSON nulls become absent fields.
function _M.query_plugins(client, args)
  check.args(args, CLEAR_ARGS, "query_plugins")
  local code = check.string(args, "robotCode", _M.MAX_ROBOT_CODE)
  local token = token_arg(client, args)
  local res = request(client, "/v1.0/robot/plugins/query", token,
                      json.encode{ robotCode = code }, nil)
  local list = res.pluginInfoList
  if list == nil or list == cjson.null then
    error(protocol("protocol.no_result", "response has no pluginInfoList"), 0)
  end
  if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then
    error(protocol("protocol.bad_result", "pluginInfoList is not an array"), 0)
  end
  local out = {}
  for i = 1, #list do
    local e = list[i]
    if type(e) ~= "table" then
      error(protocol("protocol.bad_result", "pluginInfoList holds a non-object entry"), 0)
    end
    local entry = {}
    for k, v in pairs(e) do
      if v ~= cjson.null then entry[k] = v end
    end
    out[i] = entry
  end
  return out
end


-- The entries of set_plugins, checked before any byte is sent. Field
-- names in errors say which entry: pluginInfoList[2].icon.
local function check_entries(list)
  if list == nil then
    check.fail("argument.missing", "pluginInfoList", "pluginInfoList is required")
  end
  if type(list) ~= "table" then
    check.fail("argument.type", "pluginInfoList", "pluginInfoList must be an array of tables")
  end
  local n = #list
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      check.fail("argument.type", "pluginInfoList", "pluginInfoList must be an array (keys 1..n)")
    end
  end
  if n == 0 then
    check.fail("argument.empty", "pluginInfoList",
               "pluginInfoList must not be empty (clear_plugins removes every entry)")
  end
  if n > _M.MAX_PLUGINS then
    check.fail("argument.too_long", "pluginInfoList",
               "pluginInfoList takes at most " .. _M.MAX_PLUGINS .. " entries")
  end
  local out = {}
  for i = 1, n do
    local e = list[i]
    local where = "pluginInfoList[" .. i .. "]"
    if type(e) ~= "table" then
      check.fail("argument.type", where, where .. " must be a table")
    end
    local ok, err = pcall(function()
      check.args(e, ENTRY_KEYS, where)
      local entry = {
        name = check.string(e, "name", _M.MAX_PLUGIN_NAME),
        icon = check.string(e, "icon", _M.MAX_PLUGIN_URL),
      }
      if e.pcUrl ~= nil then entry.pcUrl = check.string(e, "pcUrl", _M.MAX_PLUGIN_URL) end
      if e.mobileUrl ~= nil then entry.mobileUrl = check.string(e, "mobileUrl", _M.MAX_PLUGIN_URL) end
      out[i] = entry
    end)
    if not ok then
      if type(err) == "table" and type(err.field) == "string" and err.code ~= "argument.unknown_key" then
        err.field = where .. "." .. err.field
        err.message = where .. "." .. err.message
      end
      error(err, 0)
    end
  end
  return out
end


-- set_plugins{ robotCode =, token =, pluginInfoList = { {name=, icon=, pcUrl=, mobileUrl=}, ... } }
--   -> true | false
-- POST /v1.0/robot/plugins/set; name and icon are required strings.
function _M.set_plugins(client, args)
  check.args(args, SET_ARGS, "set_plugins")
  local code = check.string(args, "robotCode", _M.MAX_ROBOT_CODE)
  local token = token_arg(client, args)
  local list = check_entries(args.pluginInfoList)
  return request(client, "/v1.0/robot/plugins/set", token,
                 json.encode{ robotCode = code, pluginInfoList = list }, "result")
end


local batch   -- dingtalk.batch, loaded by the first batch
local MANY_OPTS = { token = true, concurrency = true, rate = true, on_result = true,
                    on_event = true, should_stop = true }
_M.MAX_RATE = 1000000   -- requests per second; only keeps an absurd value out

local function clear_body(code)
  return json.encode{ robotCode = code }
end


-- clear_plugins_many(codes, opts) -> { { robotCode =, ok = true, result = true|false }
--                                      | { robotCode =, ok = false, error = err }, ... }
-- POST /v1.0/robot/plugins/clear for each code, many at once (dingtalk.batch
-- has the policy). Every argument is checked before anything is sent; a
-- failing bot never raises. opts: token (else the client's app
-- credentials), concurrency (1..256, default 8), rate (requests per second,
-- default none), on_result(entry), on_event(ev), should_stop().
function _M.clear_plugins_many(client, codes, opts)
  if type(codes) ~= "table" then
    check.fail("argument.type", "codes", "codes must be an array of robot codes, got " .. type(codes))
  end
  local n = #codes
  for k in pairs(codes) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      check.fail("argument.type", "codes", "codes must be an array of robot codes (keys 1..n)")
    end
  end
  if n == 0 then check.fail("argument.empty", "codes", "codes must not be empty") end
  local max = _M.MAX_ROBOT_CODE
  for i = 1, n do
    local v = codes[i]
    if not printable(v, max) then
      -- the precise error, named after the entry; a non-ASCII code passes
      local name = "codes[" .. i .. "]"
      check.string({ [name] = v }, name, max)
    end
  end
  if opts == nil then opts = {} end
  check.args(opts, MANY_OPTS, "clear_plugins_many")
  local token = token_arg(client, opts)
  local c = opts.concurrency
  batch = batch or require "dingtalk.batch"
  if c == nil then
    c = batch.DEFAULT_CONCURRENCY
  elseif type(c) ~= "number" or c ~= c or c < 1 or c > batch.MAX_CONCURRENCY or c % 1 ~= 0 then
    check.fail("argument.option", "concurrency",
               "concurrency must be a whole number from 1 to " .. batch.MAX_CONCURRENCY)
  end
  local rate = opts.rate
  if rate ~= nil and (type(rate) ~= "number" or rate ~= rate or rate <= 0 or rate > _M.MAX_RATE) then
    check.fail("argument.option", "rate",
               "rate must be a number of requests per second above 0 and at most " .. _M.MAX_RATE)
  end
  for _, name in ipairs{ "on_result", "on_event", "should_stop" } do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      check.fail("argument.option", name, name .. " must be a function")
    end
  end
  if client._closed then
    check.fail("argument.closed", "client", "the client is closed")
  end
  if not client._retry or not client.batch_open then
    check.fail("argument.transport", "client", "clear_plugins_many needs a dingtalk client")
  end
  return batch.run(client, codes, {
    path = "/v1.0/robot/plugins/clear", result_field = "result", body = clear_body,
    token = token, concurrency = c, rate = rate, on_result = opts.on_result,
    on_event = opts.on_event, should_stop = opts.should_stop,
  })
end


-- The operations as plain functions of one client, so that both
-- client.robot.clear_plugins{...} and client.robot:clear_plugins{...} work.
function _M.bind(client)
  local bound = {}
  for _, name in ipairs{ "clear_plugins", "query_plugins", "set_plugins" } do
    local op = _M[name]
    bound[name] = function(a, b)
      if a == bound and type(b) == "table" then a = b end
      return op(client, a)
    end
  end
  -- clear_plugins_many(codes, opts), or robot:clear_plugins_many(codes, opts)
  bound.clear_plugins_many = function(a, b, c)
    if a == bound then a, b = b, c end
    return _M.clear_plugins_many(client, a, b)
  end
  -- A client that always goes through libcurl, with neither a hook nor a
  -- token manager: the usual clear_plugins is one C function (checks, body,
  -- POST, result), 5% of a call's instructions less than the Lua path. It
  -- hands any other arguments to the function above (nothing sent yet) and
  -- a failed attempt to the retry loop, so both keep one definition.
  local c = client._core
  if c and not client._cosockets and client._on_request == nil and client._tokens == nil
     and client._retry and client.options and core.clear_closure then
    local path = "/v1.0/robot/plugins/clear"
    local function after(token, body, err)
      local ok, res = retry_after_first(client, path, body, "result", token, err)
      if not ok then error(res, 0) end
      return res
    end
    bound.clear_plugins = core.clear_closure(c, client.options.endpoint .. path,
      client._retry.retries == 0, bound, bound.clear_plugins, after)
  end
  return bound
end


return _M
