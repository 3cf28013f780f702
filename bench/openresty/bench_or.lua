-- bench/openresty/bench_or.lua: the two sides of `make bench-openresty`,
-- served by one nginx worker (bench/openresty/worker.conf.in).
--
--   /floor   the cheapest cosocket POST of the same bytes: one constant
--            request string, connect (pooled), send, the status line and
--            headers read line by line, the body by Content-Length,
--            setkeepalive, cjson.decode of the body.
--   /module  what a user writes: client.robot.clear_plugins{...} with a
--            client made once per worker with default options.
--
-- Both answer "true\n" when the upstream said {"result":true}. The request
-- the floor sends is the module's, byte for byte (bench/openresty/run
-- checks it); the module's User-Agent is read once at start for that.
-- BENCH_BREAK (ua | reuse) makes the floor unfair on purpose, so that
-- spec/82 can see the fairness check fail.
-- luacheck: globals ngx
local dingtalk = require "dingtalk"
local cjson = require "cjson"

local cjson_decode = cjson.decode
local str_byte = string.byte
local str_sub = string.sub
local tonumber = tonumber

local _M = {}

local BODY = '{"robotCode":"dingbench"}'
local ROBOT = "dingbench"

local client, token
local request, host, port
local keepalive = true

function _M.init()
  -- the profile run (BENCH_OR_PROFILE=1 bench/openresty/run): LuaJIT's
  -- trace log, aborts and their reasons included
  local jitv = os.getenv("BENCH_JITV")
  if jitv and jitv ~= "" then require("jit.v").start(jitv) end
  local up = assert(os.getenv("BENCH_UPSTREAM"), "BENCH_UPSTREAM not set")
  token = assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN not set")
  local p
  host, p = up:match("^http://([%d%.]+):(%d+)$")
  port = assert(tonumber(p), "BENCH_UPSTREAM must be http://IP:PORT")
  client = dingtalk.new{ endpoint = up }
  local ua = client.options.user_agent
  local broken = os.getenv("BENCH_BREAK")
  if broken == "ua" then ua = ua .. " (changed)" end
  if broken == "reuse" then keepalive = false end
  request = "POST /v1.0/robot/plugins/clear HTTP/1.1\r\n"
    .. "Host: " .. host .. ":" .. port .. "\r\n"
    .. "User-Agent: " .. ua .. "\r\n"
    .. "x-acs-dingtalk-access-token: " .. token .. "\r\n"
    .. "Content-Type: application/json\r\n"
    .. "Accept: application/json\r\n"
    .. "Content-Length: " .. #BODY .. "\r\n"
    .. "\r\n" .. BODY
end


local function failed(what, err)
  ngx.log(ngx.ERR, "floor: ", what, ": ", err)
  return ngx.exit(502)
end

-- "content-length:" (15 bytes), any case
local function content_length(line)
  if #line < 16 then return nil end
  local c = str_byte(line, 1)
  if c ~= 67 and c ~= 99 then return nil end      -- C c
  local name = str_sub(line, 1, 15)
  if name ~= "Content-Length:" and name:lower() ~= "content-length:" then return nil end
  return tonumber(str_sub(line, 16))
end

function _M.floor()
  local sock = ngx.socket.tcp()
  sock:settimeout(10000)
  local ok, err = sock:connect(host, port)
  if not ok then return failed("connect", err) end
  ok, err = sock:send(request)
  if not ok then return failed("send", err) end
  local line
  line, err = sock:receive("*l")
  if not line then return failed("status line", err) end
  if str_sub(line, 10, 12) ~= "200" then return failed("status", line) end
  local len
  while true do
    line, err = sock:receive("*l")
    if not line then return failed("headers", err) end
    if line == "" then break end
    len = len or content_length(line)
  end
  if not len then return failed("headers", "no Content-Length") end
  local body
  body, err = sock:receive(len)
  if not body then return failed("body", err) end
  if keepalive then sock:setkeepalive() else sock:close() end
  if cjson_decode(body).result ~= true then return failed("answer", body) end
  ngx.print("true\n")
end

function _M.module()
  if client.robot.clear_plugins{ robotCode = ROBOT, token = token } then
    ngx.print("true\n")
  else
    return ngx.exit(502)
  end
end

return _M
