-- bench/bulk.lua: one side of `make bench-bulk` (bench/bulk runs them all).
--
--   lua5.4 bench/bulk.lua many ENDPOINT N CONCURRENCY [RATE]
--       client.robot.clear_plugins_many over N distinct codes
--   lua5.4 bench/bulk.lua single ENDPOINT N
--       the single-call path: client.robot.clear_plugins N times, one after another
--   lua5.4 bench/bulk.lua report RESULTS.tsv
--       the table of bench/bulk's results (phase TAB json, one a line)
--
-- A run prints one JSON line: wall and CPU seconds (benchclock: the clocks
-- bench/run reads), peak RSS (VmHWM, kB), and the outcomes by code.
local cjson = require "cjson"

local mode = arg[1]

local function rss_peak()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)"))
end

local function codes(n)
  local t = {}
  for i = 1, n do t[i] = "dingbot-plugins-bulk-" .. i end
  return t
end

local function count(results)
  local out = { cleared = 0, empty = 0, failed = {}, not_attempted = 0 }
  for _, r in ipairs(results) do
    if r.ok then
      if r.result == true then out.cleared = out.cleared + 1 else out.empty = out.empty + 1 end
    elseif r.error.code == "batch.not_attempted" then
      out.not_attempted = out.not_attempted + 1
    else
      out.failed[r.error.code] = (out.failed[r.error.code] or 0) + 1
    end
  end
  return out
end

if mode == "many" or mode == "single" then
  local clock = require "benchclock"
  local dingtalk = require "dingtalk"
  local ep, n = arg[2], tonumber(arg[3])
  local c = dingtalk.new{ endpoint = ep }
  local list = codes(n)
  local token = "bench-token"
  collectgarbage()
  local w0, c0 = clock.now(), clock.cpu()
  local results
  if mode == "many" then
    results = c.robot.clear_plugins_many(list, { token = token, concurrency = tonumber(arg[4]),
                                                 rate = tonumber(arg[5]) })
  else
    results = {}
    for i, code in ipairs(list) do
      local ok, res = pcall(c.robot.clear_plugins, { robotCode = code, token = token })
      results[i] = ok and { ok = true, result = res } or { ok = false, error = res }
    end
  end
  local w1, c1 = clock.now(), clock.cpu()
  c:close()
  io.write(cjson.encode{ mode = mode, n = n, concurrency = tonumber(arg[4]), rate = tonumber(arg[5]),
                         wall = w1 - w0, cpu = c1 - c0, rss_kb = rss_peak(), outcomes = count(results) },
           "\n")
  return
end

if mode ~= "report" then
  io.stderr:write("usage: bench/bulk.lua many|single|report ...\n")
  os.exit(2)
end

-------------------------------------------------------------------------------
-- report

local rows = {}
for line in io.lines(arg[2]) do
  local phase, j = line:match("^([^\t]+)\t(.*)$")
  if phase then rows[#rows + 1] = { phase = phase, d = cjson.decode(j) } end
end

local function f(x, p) return x and string.format("%." .. (p or 2) .. "f", x) or "-" end
local function int(x) return x and string.format("%d", x) or "-" end

local function failed_text(o)
  if not o then return "-" end
  local parts = {}
  for k, v in pairs(o.failed or {}) do parts[#parts + 1] = k .. " " .. int(v) end
  table.sort(parts)
  local lost = #parts > 0 and table.concat(parts, ", ") or "0"
  return int(o.cleared) .. " / " .. lost .. " / " .. int(o.not_attempted)
end

local out = {}
local function p(s) out[#out + 1] = s end

local env
for _, r in ipairs(rows) do if r.phase == "env" then env = r.d end end
if env then
  p(string.format("- date: %s", env.date))
  p(string.format("- machine: %s", env.machine))
  p(string.format("- code: %s", env.code))
  p("")
end

p("| run | bots | delay ms | concurrency | wall s | limit s | wall/limit | max in flight | connections "
  .. "| requests | refused | cleared / failed / not attempted | CPU s | CPU ms per call | peak RSS kB |")
p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for _, r in ipairs(rows) do
  local d = r.d
  if r.phase == "run" then
    local limit = d.delay_ms and d.concurrency and math.ceil(d.n / d.concurrency) * d.delay_ms / 1000
    if d.rate_limit and d.rate_limit > 0 then limit = d.n / d.rate_limit end
    local o = d.outcomes
    p(string.format("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |",
      d.label, d.n, int(d.delay_ms), int(d.concurrency), f(d.wall), f(limit),
      limit and limit > 0 and f(d.wall / limit) or "-",
      int(d.stats and d.stats.max_in_flight), int(d.stats and d.stats.connections),
      int(d.stats and d.stats.robot_requests), int(d.stats and d.stats.refused), failed_text(o),
      d.cpu and f(d.cpu) or "-", d.cpu and f(d.cpu / d.n * 1000, 3) or "-", int(d.rss_kb)))
  end
end
p("")
p("limit: ceil(bots / concurrency) x delay (the rate runs: bots / rate_limit). CPU and RSS: the client "
  .. "process only (getrusage, VmHWM); the xargs and CLI runs are timed from the shell (no CPU figure).")
-- the ratios and the issue's targets, from the rows by label
local by = {}
for _, r in ipairs(rows) do if r.phase == "run" then by[r.d.label] = r.d end end
local function limit_of(d) return math.ceil(d.n / d.concurrency) * d.delay_ms / 1000 end
local function lost(d)
  local n = 0
  for _, v in pairs(d.outcomes and d.outcomes.failed or {}) do n = n + v end
  return n + (d.outcomes and d.outcomes.not_attempted or 0)
end
local function verdict(ok) return ok and "met" or "**missed**" end
local ratios = {}
local function ratio(what, value, target) ratios[#ratios + 1] = { what, value, target or "" } end
local c1, c16, c64 = by["batch c1"], by["batch c16"], by["batch c64"]
local xargs, cli = nil, by["command --concurrency 16"]
for label, d in pairs(by) do if label:find("^xargs") then xargs = d end end
if c16 then
  local r = c16.wall / limit_of(c16)
  ratio(string.format("batch c16, %d bots at %d ms: wall / limit (%.2f s)", c16.n, c16.delay_ms, limit_of(c16)),
        f(r), "<= 1.10 " .. verdict(r <= 1.10))
  ratio("batch c16: connections / most requests at once", int(c16.stats.connections) .. " / "
        .. int(c16.stats.max_in_flight), "<= 16 " .. verdict(c16.stats.connections <= 16))
  if c1 then ratio("batch c1 / batch c16, wall", f(c1.wall / c16.wall)) end
  if c64 then ratio("batch c64 / its limit, wall", f(c64.wall / limit_of(c64))) end
  if xargs then ratio("xargs -P 16 (a process per code) / batch c16, wall", f(xargs.wall / c16.wall)) end
  if cli then ratio("command --concurrency 16 / batch c16, wall", f(cli.wall / c16.wall)) end
end
local big, single = by["batch c64, memory/CPU"], by["single-call path (loop)"]
if big then
  ratio(string.format("batch c64, %d bots at %d ms: peak RSS", big.n, big.delay_ms),
        string.format("%.1f MB", big.rss_kb / 1024), "< 30 MB " .. verdict(big.rss_kb < 30 * 1024))
  ratio("batch c64: wall / limit", f(big.wall / limit_of(big)))
  if single then
    local r = (big.cpu / big.n) / (single.cpu / single.n)
    ratio(string.format("CPU per call, batch c64 / single-call path (%s / %s ms)", f(big.cpu / big.n * 1000, 3),
                        f(single.cpu / single.n * 1000, 3)), f(r), "<= 1.5 " .. verdict(r <= 1.5))
  end
end
for label, d in pairs(by) do
  if label:find("%-%-rate %d") then
    local want = d.n / d.rate_limit
    local refused = d.stats.refused / math.max(d.stats.robot_requests, 1)
    ratio(string.format("%d bots, limit %d/s, --rate %d: wall / %.0f s", d.n, d.rate_limit, d.rate_limit, want),
          f(d.wall / want), "<= 1.10 " .. verdict(d.wall / want <= 1.10))
    ratio("the same: refused / requests", string.format("%.1f %%", refused * 100),
          "< 2 % " .. verdict(refused < 0.02))
  elseif label:find("%-%-rate none") then
    ratio(string.format("%d bots, limit %d/s, no --rate: lost (failed or not attempted); refused answers",
                        d.n, d.rate_limit), int(lost(d)) .. "; " .. int(d.stats.refused),
          "0 lost " .. verdict(lost(d) == 0 and d.outcomes.cleared == d.n))
  end
end
if #ratios > 0 then
  p("")
  p("| ratio | value | target |")
  p("|---|---|---|")
  for _, x in ipairs(ratios) do p(string.format("| %s | %s | %s |", x[1], x[2], x[3])) end
end
io.write(table.concat(out, "\n"), "\n")
