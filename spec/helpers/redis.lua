-- A real redis-server for the fleet specs, and the fleet's member processes.
--
-- One file, two roles:
--   * in busted:  local redis = require "spec.helpers.redis"
--                 local h = redis.start()          -- h.host, h.port, h.pid, h.dir
--                 local r = redis.client(h)        -- redis-lua, connected
--                 redis.stop(h)                    -- by PID; removes h.dir
--                 redis.fleet(h, n, env)           -- n member processes at once
--   * in a member process (a child interpreter started by redis.fleet /
--     redis.member_cmd): redis.member() makes a client with the shared
--     Redis cache from its environment (FLEET_*), makes FLEET_CALLS calls
--     and prints one JSON line: { ok = n, failed = n, errors = {...},
--     cache_errors = {...} }.
--
-- redis-server: --port P --bind 127.0.0.1 --save '' --appendonly no --dir DIR
-- (no persistence, loopback only, its own directory), started on a free
-- port and stopped by its PID. redis-lua is Debian's lua-redis: pure Lua
-- over LuaSocket, installed for 5.1-5.3; on 5.4 its 5.3 copy is used.
local M = {}

local shell = require "spec.helpers.shell"
local q = shell.q

function M.require_redis()
  local ok, redis = pcall(require, "redis")
  if ok then return redis end
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua"
  return require "redis"
end

local capture = shell.capture

local read_file = shell.read

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("%)%s+(%a)")
  return state ~= "Z" and state ~= "X"
end

local function root()
  local src = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  local r = src:match("^(.-)/?spec/helpers/redis%.lua$")
  if not r or r == "" then r = "." end
  if r:sub(1, 1) ~= "/" then r = capture("pwd"):gsub("%s+$", "") .. "/" .. r:gsub("^%./?", "") end
  return (r:gsub("/%.?$", ""))
end
M.root = root

-- Starts redis-server on a free loopback port (a few tries if another
-- process takes the port first).
function M.start()
  local socket = require "socket"
  local dir = capture("mktemp -d -t dingtalk-redis.XXXXXX"):gsub("%s+$", "")
  assert(dir ~= "", "mktemp failed")
  local last
  for _ = 1, 5 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    os.remove(dir .. "/redis.pid")
    os.execute("redis-server --port " .. port .. " --bind 127.0.0.1 --save '' --appendonly no"
      .. " --dir " .. q(dir) .. " --daemonize yes --pidfile " .. q(dir .. "/redis.pid")
      .. " --logfile " .. q(dir .. "/redis.log") .. " >/dev/null 2>&1")
    local deadline = socket.gettime() + 5
    local h = { host = "127.0.0.1", port = port, dir = dir }
    repeat
      h.pid = h.pid or tonumber((read_file(dir .. "/redis.pid") or ""):match("%d+"))
      local c = socket.tcp()
      c:settimeout(0.2)
      if c:connect("127.0.0.1", port) then
        c:send("PING\r\n")
        local line = c:receive("*l")
        c:close()
        if h.pid and line == "+PONG" then return h end
      else
        c:close()
      end
      socket.sleep(0.02)
    until socket.gettime() > deadline
    last = read_file(dir .. "/redis.log") or ""
    if h.pid then M.stop(h, true) end
    if not last:find("Address already in use", 1, true) then break end
  end
  os.execute("rm -rf " .. q(dir))
  error("redis helper: redis-server did not start:\n" .. tostring(last), 2)
end

-- TERM by PID (redis exits at once without persistence), KILL if it hangs.
function M.stop(h, keep_dir)
  local socket = require "socket"
  local pid = h.pid
  if pid and alive(pid) then
    os.execute("kill -CONT " .. math.floor(pid) .. " 2>/dev/null; kill -TERM " .. math.floor(pid))
    local deadline = socket.gettime() + 5
    while alive(pid) and socket.gettime() < deadline do socket.sleep(0.02) end
    if alive(pid) then os.execute("kill -KILL " .. math.floor(pid)) end
  end
  h.pid = nil
  if not keep_dir and h.dir and h.dir:match("^/tmp/dingtalk%-redis%.") then
    os.execute("rm -rf " .. q(h.dir))
  end
end

function M.client(h, timeout)
  local redis = M.require_redis()
  return redis.connect{ host = h.host, port = h.port, timeout = timeout or 2 }
end

-- Every key and its value (strings only: the cache stores nothing else).
function M.dump(h)
  local r = M.client(h)
  local out = {}
  for _, k in ipairs(r:keys("*")) do out[k] = { value = r:get(k), ttl = r:ttl(k) } end
  r:quit()
  return out
end

-------------------------------------------------------------------------------
-- fleet members

-- The shell command of one member (a child interpreter with this
-- checkout's modules). env: FLEET_* settings.
function M.member_cmd(env)
  local r = root()
  local lua = shell.LUA
  local path = r .. "/lua/?.lua;" .. r .. "/?.lua;;"
  local cpath = r .. "/build/" .. lua .. "/?.so;;"
  local parts = { shell.lua_env(path, cpath) }
  local keys = {}
  for k in pairs(env) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. q(env[k]) end
  parts[#parts + 1] = lua .. " -e " .. q('require("spec.helpers.redis").member()')
  return table.concat(parts, " ")
end

-- n members at once (all started before any is waited for); their JSON
-- lines, decoded, in start order.
function M.fleet(n, env)
  local cjson = require "cjson"
  local dir = capture("mktemp -d -t dingtalk-fleet.XXXXXX"):gsub("%s+$", "")
  local cmds = {}
  for i = 1, n do
    cmds[#cmds + 1] = "( " .. M.member_cmd(env) .. " > " .. q(dir .. "/" .. i .. ".out") .. " 2>&1 ) &"
  end
  os.execute(table.concat(cmds, "\n") .. "\nwait")
  local out = {}
  for i = 1, n do
    local s = read_file(dir .. "/" .. i .. ".out") or ""
    local last = ""
    for line in s:gmatch("[^\n]+") do last = line end
    local ok, v = pcall(cjson.decode, last)
    out[i] = ok and type(v) == "table" and v or { raw = s }
  end
  os.execute("rm -rf " .. q(dir))
  return out
end

function M.member()
  local cjson = require "cjson"
  local dingtalk = require "dingtalk"
  local redis = M.require_redis()
  local env = os.getenv
  local port = tonumber(env("FLEET_REDIS_PORT"))
  local cache = dingtalk.token_cache.redis(function()
    return redis.connect{ host = "127.0.0.1", port = port, timeout = 0.5 }
  end)
  local report = { ok = 0, failed = 0, errors = {}, cache_errors = {} }
  local c = dingtalk.new{
    endpoint = env("FLEET_ENDPOINT"), app_key = env("FLEET_APP_KEY"), app_secret = env("FLEET_SECRET"),
    token_cache = cache, timeout = 5000,
    on_request = function(ev)
      if ev.cache_error then report.cache_errors[#report.cache_errors + 1] = ev.cache_error end
    end,
  }
  for _ = 1, tonumber(env("FLEET_CALLS") or "1") do
    local ok, res = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    if ok and res == true then
      report.ok = report.ok + 1
    else
      report.failed = report.failed + 1
      report.errors[#report.errors + 1] = tostring(res)
    end
  end
  io.stdout:write(cjson.encode(report), "\n")
  c:close()
end

return M
