-- bench/module.lua: the module side of the bench. Makes CALLS calls of
-- c.robot.clear_plugins{...} through the dingtalk module and prints one
-- JSON line with the same fields as bench/floor.c.
--
--   lua5.4 bench/module.lua ENDPOINT CALLS [--lat] [--new] [--mem N,N,...]
--                           [--quiet] [--print-ua]
--
--   --lat    time every call (p50/p99); off for the callgrind runs
--   --new    a new client (dingtalk.new, closed after the call) per call
--   --mem    VmRSS (and the Lua heap) after those many calls
--   --quiet  no clock helper, no output: the request capture (the cold
--            start has its own script, bench/cold.lua)
--   --core   with --quiet: the same calls through the client's C core
--            directly (core.post), without the Lua layer, for callgrind
-- Needs LUA_PATH/LUA_CPATH to reach lua/, build/<lua>/ and, unless --quiet,
-- bench/out/<lua>/benchclock.so.
local endpoint, calls = arg[1], tonumber(arg[2])
local lat, fresh, quiet, print_ua, core_only, mem_at = false, false, false, false, false, {}
local i = 3
while arg[i] do
  local a = arg[i]
  if a == "--lat" then lat = true
  elseif a == "--new" then fresh = true
  elseif a == "--quiet" then quiet = true
  elseif a == "--print-ua" then print_ua = true
  elseif a == "--core" then core_only = true
  elseif a == "--mem" and arg[i + 1] then
    i = i + 1
    for n in arg[i]:gmatch("%d+") do mem_at[#mem_at + 1] = tonumber(n) end
  else
    io.stderr:write("module.lua: unknown argument ", a, "\n"); os.exit(2)
  end
  i = i + 1
end
if not endpoint or not calls or calls < 1 then
  io.stderr:write("usage: module.lua ENDPOINT CALLS [--lat] [--new] [--mem N,N] [--quiet]\n")
  os.exit(2)
end

local dingtalk = require "dingtalk"

local ROBOT, TOKEN = "dingbench", "bench-token-0123456789abcdef"

if print_ua then
  local c = dingtalk.new{ endpoint = endpoint }
  print(c.options.user_agent)
  c:close()
  return
end

local function proc_kb(key)
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local s = f:read("*a"); f:close()
  return tonumber(s:match(key .. ":%s*(%d+)")) or -1
end

local function fail(n, v)
  -- an error table is raised by the call itself and ends the run with it
  io.stderr:write(string.format("module.lua: call %d: unexpected result %s\n", n, tostring(v)))
  os.exit(1)
end

if quiet then   -- require (above), a client, the calls, no output
  local c = dingtalk.new{ endpoint = endpoint }
  if core_only then   -- the request the Lua layer makes, straight to core.post
    local post, cc, url = require("dingtalk.core").post, c._core, endpoint .. "/v1.0/robot/plugins/clear"
    local body = '{"robotCode":"' .. ROBOT .. '"}'
    for n = 1, calls do
      local ok, v = post(cc, url, TOKEN, body, "result", nil, false)
      if not ok or v ~= true then fail(n, v) end
    end
    return
  end
  for n = 1, calls do
    local v = c.robot.clear_plugins{ robotCode = ROBOT, token = TOKEN }
    if v ~= true then fail(n, v) end
  end
  return
end

local clock = require "benchclock"
local now, cpu = clock.now, clock.cpu
local lats = lat and {} or nil
local mem, heap, m = {}, {}, 1
local c = not fresh and dingtalk.new{ endpoint = endpoint } or nil

local t0, c0 = now(), cpu()
for n = 1, calls do
  local s = lat and now()
  if fresh then c = dingtalk.new{ endpoint = endpoint } end
  local v = c.robot.clear_plugins{ robotCode = ROBOT, token = TOKEN }
  if v ~= true then fail(n, v) end
  if fresh then c:close() end
  if lat then lats[n] = now() - s end
  if n == mem_at[m] then
    mem[m], heap[m] = proc_kb("VmRSS"), collectgarbage("count")
    m = m + 1
  end
end
local c1, t1 = cpu(), now()
local wall = t1 - t0

local out = {
  string.format('{"impl":"module","mode":"%s","calls":%d,"wall_s":%.6f,"cps":%.1f,"cpu_us_per_call":%.3f,',
                fresh and "new" or "reuse", calls, wall, calls / wall, (c1 - c0) * 1e6 / calls),
}
if lat then
  table.sort(lats)
  -- nearest rank, the same rule as floor.c
  local function pct(p) return lats[math.min(calls, math.max(1, math.ceil(p * calls - 1e-9)))] end
  out[#out + 1] = string.format('"p50_us":%.1f,"p99_us":%.1f,', pct(0.50) * 1e6, pct(0.99) * 1e6)
end
local mk, hk = {}, {}
for k = 1, m - 1 do
  mk[k] = string.format('"%d":%d', mem_at[k], mem[k])
  hk[k] = string.format('"%d":%.1f', mem_at[k], heap[k])
end
out[#out + 1] = '"mem_kb":{' .. table.concat(mk, ",") .. '},"lua_heap_kb":{' .. table.concat(hk, ",") .. '},'
out[#out + 1] = string.format('"rss_kb":%d,"hwm_kb":%d}', proc_kb("VmRSS"), proc_kb("VmHWM"))
print(table.concat(out))
