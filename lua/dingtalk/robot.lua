-- Robot operations: argument checks, the request body, and the call
-- through a client. One function per platform operation.
local check = require "dingtalk.check"
local cjson = require "cjson"

local error = error
local type = type

-- A private instance: the caller's cjson settings never change our bodies.
local json = cjson.new()

local _M = {}

-- Real codes are ~20 ASCII characters and tokens 32; the caps only keep an
-- absurd value from reaching the wire.
_M.MAX_ROBOT_CODE = 256
_M.MAX_TOKEN = 1024

local CLEAR_ARGS = { robotCode = true, token = true }

-- The body for the last robot code: callers clear the same bot again and
-- again, and encoding it anew cost as much as all the other Lua work of a
-- call. A robot code is no secret; the token is never kept.
local last_code, last_body


-- clear_plugins{ robotCode =, token = } -> true | false
-- POST /v1.0/robot/plugins/clear; raises an error table on any failure.
function _M.clear_plugins(client, args)
  check.args(args, CLEAR_ARGS, "clear_plugins")
  local code = check.string(args, "robotCode", _M.MAX_ROBOT_CODE)
  local token = check.string(args, "token", _M.MAX_TOKEN)
  if code ~= last_code then
    last_body, last_code = json.encode{ robotCode = code }, code
  end
  local ok, res = client:post("/v1.0/robot/plugins/clear", token, last_body, "result")
  if not ok then error(res, 0) end
  return res
end


-- The operations as plain functions of one client, so that both
-- client.robot.clear_plugins{...} and client.robot:clear_plugins{...} work.
function _M.bind(client)
  local bound = {}
  bound.clear_plugins = function(a, b)
    if a == bound and type(b) == "table" then a = b end
    return _M.clear_plugins(client, a)
  end
  return bound
end


return _M
