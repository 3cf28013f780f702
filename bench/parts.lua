-- bench/parts.lua: one piece of a module call, N times, for callgrind.
-- bench/run runs each PART and "none" (the same loop, empty) under
-- callgrind; (Ir(PART) - Ir(none)) / N is that piece's cost per call.
--   lua5.4 bench/parts.lua PART N
-- PART: none | lua_layer (the whole call with the C core stubbed out) |
--   args_table | check_args | check_string | url | request | post |
--   encode | decode | map
-- A PART that the code no longer has fails, and bench/run leaves it out.
local part, n = arg[1], tonumber(arg[2])
-- The stub goes in before the Lua layer loads: client.lua keeps core.post
-- in a local.
local core = require "dingtalk.core"
local real_post = core.post
core.post = function() return true, true end
local dingtalk = require "dingtalk"
local check = require "dingtalk.check"
local json = require("cjson").new()

local ROBOT, TOKEN = "dingbench", "bench-token-0123456789abcdef"
local ENDPOINT, PATH = "http://127.0.0.1:12345", "/v1.0/robot/plugins/clear"
local ALLOWED = { robotCode = true, token = true }
local args = { robotCode = ROBOT, token = TOKEN }
local answer = '{"result":true}'

local c = dingtalk.new{ endpoint = ENDPOINT }
core.post = real_post

local parts = {
  none = function() end,
  lua_layer = function()
    assert(c.robot.clear_plugins{ robotCode = ROBOT, token = TOKEN } == true)
  end,
  args_table = function() local a = { robotCode = ROBOT, token = TOKEN }; return a end,
  check_args = function() check.args(args, ALLOWED, "clear_plugins") end,
  check_string = function()
    check.string(args, "robotCode", 256); check.string(args, "token", 1024)
  end,
  url = function() local u = ENDPOINT .. PATH; return u end,
  -- client:request (retries, tokens, hook) down to the stubbed core
  request = function()
    local ok = c:request(PATH, '{"robotCode":"dingbench"}', "result", { token = TOKEN })
    assert(ok == true)
  end,
  -- client:post (the transport seam: transport choice, URL) to the stub
  post = function() assert(c:post(PATH, TOKEN, '{"robotCode":"dingbench"}', "result") == true) end,
  encode = function() local b = json.encode{ robotCode = ROBOT }; return b end,
  decode = function() local t = json.decode(answer); return t end,
  map = function() local ok, r = core.map(200, {}, answer, "result"); return ok, r end,
}
local f = assert(parts[part], "unknown part")
f()   -- fails loudly here if the layout changed
for _ = 1, n do f() end
