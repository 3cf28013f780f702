-- bench/openresty/report.lua: the table of `make bench-openresty` from
-- OUTDIR/results.tsv; prints it and writes it to REPORT.
--   lua5.4 bench/openresty/report.lua OUTDIR ELAPSED_S REPORT
local out_dir, elapsed, report = arg[1], tonumber(arg[2]), arg[3]

local results = require "bench.results"
local sh, median = results.sh, results.median

local R = results.load(out_dir)


-- CPU per request, µs: utime+stime ticks, and the scheduler's ns
local function cpu_us(r) return r.ticks / r.hz * 1e6 / r.requests end
local function sched_us(r) return r.sched_ns / 1e3 / r.requests end

local conns_seen, by = {}, {}
for _, r in ipairs(R.timed or {}) do
  if not by[r.conns] then
    by[r.conns] = {}
    conns_seen[#conns_seen + 1] = r.conns
  end
  by[r.conns][r.round] = by[r.conns][r.round] or {}
  by[r.conns][r.round][r.side] = r
end
table.sort(conns_seen)

local lines = {}
local function say(s) lines[#lines + 1] = s or "" end
local function f(x, fmt) return x and string.format(fmt or "%.2f", x) or "-" end
-- a count (cjson gives floats on 5.3/5.4) or what was there
local function n(x) return type(x) == "number" and string.format("%d", x) or tostring(x) end

local req, ka = (R.request or {})[1] or {}, (R.keepalive or {})[1] or {}
say("# make bench-openresty")
say()
say("- date: " .. os.date("!%Y-%m-%d %H:%M UTC") .. string.format("; %d s in all", elapsed or 0))
say("- machine: " .. sh("lscpu | sed -n 's/^Model name: *//p' | head -n 1") .. ", "
    .. sh("nproc") .. " cores, Linux " .. sh("uname -r"))
say("- versions: nginx " .. sh("nginx -v 2>&1 | sed 's/.*\\///'")
    .. "; lua-nginx-module " .. sh("dpkg-query -W -f '${Version}' libnginx-mod-http-lua")
    .. "; LuaJIT " .. sh("dpkg-query -W -f '${Version}' libluajit2-5.1-2")
    .. "; lua-resty-core " .. sh("dpkg-query -W -f '${Version}' lua-resty-core")
    .. "; wrk " .. sh("dpkg-query -W -f '${Version}' wrk"))
local dirty = sh("git status --porcelain -- lua src bench/openresty") ~= "" and " (uncommitted changes)" or ""
say("- code: " .. sh("git rev-parse --abbrev-ref HEAD") .. " at " .. sh("git rev-parse --short HEAD") .. dirty)
say(string.format("- fairness: requests byte-identical: %s (%s bytes); %s calls each on one client "
  .. "connection: floor %s upstream connection(s) for %s requests, module %s for %s; answers true: "
  .. "floor %s, module %s", tostring(req.identical), n(req.bytes), n(ka.calls),
  n(ka.floor_conns), n(ka.floor_reqs), n(ka.module_conns), n(ka.module_reqs),
  n(ka.floor_true), n(ka.module_true)))
say()
say("| clients | side | requests/s | worker CPU µs/request (utime+stime) | (schedstat) | "
    .. "upstream connections opened per round (max) | non-2xx + socket errors |")
say("|---|---|---|---|---|---|---|")
local ratios = {}
for _, c in ipairs(conns_seen) do
  local acc = { floor = { rps = {}, cpu = {}, sch = {}, up = 0, bad = 0 },
                module = { rps = {}, cpu = {}, sch = {}, up = 0, bad = 0 } }
  local rr, rc, rs = {}, {}, {}
  for _, pair in pairs(by[c]) do
    for side, r in pairs(pair) do
      local a = acc[side]
      a.rps[#a.rps + 1] = r.rps
      a.cpu[#a.cpu + 1] = cpu_us(r)
      a.sch[#a.sch + 1] = sched_us(r)
      if r.upstream_accepts > a.up then a.up = r.upstream_accepts end
      a.bad = a.bad + r.non2xx + r.errors
    end
    if pair.floor and pair.module then
      rr[#rr + 1] = pair.module.rps / pair.floor.rps
      rc[#rc + 1] = cpu_us(pair.module) / cpu_us(pair.floor)
      rs[#rs + 1] = sched_us(pair.module) / sched_us(pair.floor)
    end
  end
  for _, side in ipairs{ "floor", "module" } do
    local a = acc[side]
    say(string.format("| %d | %s | %s | %s | %s | %d | %d |", c, side, f(median(a.rps), "%.0f"),
      f(median(a.cpu)), f(median(a.sch)), a.up, a.bad))
  end
  ratios[#ratios + 1] = { c = c, rps = median(rr), cpu = median(rc), sch = median(rs), n = #rr,
                          extra = median(acc.module.sch) - median(acc.floor.sch) }
end
say()
say("| clients | module/floor worker CPU per request | (schedstat) | module/floor requests/s | "
    .. "extra CPU per call, µs (schedstat) | rounds | target |")
say("|---|---|---|---|---|---|---|")
for _, r in ipairs(ratios) do
  local target = ""
  if r.c == 16 then
    target = string.format("CPU <= 1.10 %s; rps >= 0.90 %s", r.cpu and r.cpu <= 1.10 and "met" or "**missed**",
                           r.rps and r.rps >= 0.90 and "met" or "**missed**")
  end
  say(string.format("| %d | %s | %s | %s | %s | %d | %s |", r.c, f(r.cpu), f(r.sch), f(r.rps), f(r.extra),
                    r.n, target))
end
say()
say("Ratios: the median over rounds of module/floor within a round (the sides alternate).")
say("CPU: the nginx worker process only (the upstream is another nginx; wrk runs outside).")

local text = table.concat(lines, "\n") .. "\n"
io.write(text)
if report then
  local fh = assert(io.open(report, "w"))
  fh:write(text)
  fh:close()
end
