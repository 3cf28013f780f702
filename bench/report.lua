-- bench/report.lua: turns bench/out/results.tsv and the callgrind
-- annotations into the table, the ratios against the targets and the
-- profile; prints it and writes bench/out/latest.md.
--   lua5.4 bench/report.lua OUTDIR LUA ELAPSED_US
local out_dir, lua, elapsed = arg[1], arg[2], tonumber(arg[3])

local results = require "bench.results"
local sh, median = results.sh, results.median

-- results ------------------------------------------------------------------
local R = results.load(out_dir)


local function pick(phase, impl, mode, key)
  local v = {}
  for _, r in ipairs(R[phase] or {}) do
    if r.impl == impl and (not mode or r.mode == mode) and r[key] then v[#v + 1] = r[key] end
  end
  return median(v)
end

local function mem_at(impl, n)
  for _, r in ipairs(R.mem or {}) do
    local k = string.format("%d", n)
    if r.impl == impl then return r.mem_kb[k], r.lua_heap_kb and r.lua_heap_kb[k], r end
  end
end

local cg = R.callgrind[1]
local extra = cg.long - cg.short
-- the median of the pairs bench/run made of each side (the first pair is
-- also the one the profile below is made of)
local function ir_median(short, long, i)
  local v = { (cg[long] - cg[short]) / extra }
  for _, r in ipairs(cg.reps or {}) do v[#v + 1] = (r[i + 1] - r[i]) / extra end
  return median(v), v
end
local ir_floor, ir_floor_all = ir_median("floor_short", "floor_long", 1)
local ir_module, ir_module_all = ir_median("module_short", "module_long", 3)
local ir_core = cg.core_long and ir_median("core_short", "core_long", 5)
local memcalls, floormem
for _, r in ipairs(R.mem or {}) do
  if r.impl == "module" then memcalls = r.calls else floormem = r.calls end
end

-- the table ---------------------------------------------------------------
local function fmt(v, unit)
  if v == nil then return "n/a" end
  if unit == "int" then
    local s = string.format("%d", math.floor(v + 0.5)):reverse():gsub("(%d%d%d)", "%1,"):reverse()
    return (s:gsub("^(%-?),", "%1"))
  end
  return string.format(unit or "%.1f", v)
end

local rows, targets = {}, {}
local function row(name, f, m, unit, target, higher_better, ratio)
  ratio = ratio or ((f and m and f ~= 0) and m / f or nil)
  local verdict = ""
  if target and ratio then
    local ok = higher_better and ratio >= target or (not higher_better and ratio <= target)
    verdict = string.format("%s %.2f (%s)", higher_better and ">=" or "<=", target, ok and "met" or "MISSED")
    targets[#targets + 1] = { name = name, ratio = ratio, target = target, ok = ok,
                              higher = higher_better }
  end
  rows[#rows + 1] = { name, fmt(f, unit), fmt(m, unit), ratio and string.format("%.2f", ratio) or "", verdict }
end

local coldf, coldm, coldc = {}, {}, {}
for _, r in ipairs(R.cold or {}) do
  local t = r.impl == "floor" and coldf or r.impl == "core" and coldc or coldm
  t[#t + 1] = r.us / 1000
end
local ncold = #coldf

row("instructions per call (callgrind)", ir_floor, ir_module, "int", 1.05, false)
-- the same requests through core.post: what the Lua layer adds is the rest
row("instructions per call, the C core alone (core.post)", ir_floor, ir_core, "int")
-- Runs alternate floor, module, module, floor, ...: the ratio is the median
-- of each round's module/floor, which cancels slow drifts of the machine.
local paired, rounds = {}, {}
for _, r in ipairs(R.timed or {}) do
  local k = r.round or 0
  rounds[k] = rounds[k] or {}
  rounds[k][r.impl] = r.cps
end
for _, v in pairs(rounds) do
  if v.floor and v.module then paired[#paired + 1] = v.module / v.floor end
end
row("calls per second, reused client", pick("timed", "floor", "reuse", "cps"),
    pick("timed", "module", "reuse", "cps"), "int", 0.90, true, median(paired))
row("p50 latency, us", pick("timed", "floor", "reuse", "p50_us"), pick("timed", "module", "reuse", "p50_us"))
row("p99 latency, us", pick("timed", "floor", "reuse", "p99_us"), pick("timed", "module", "reuse", "p99_us"))
row("CPU time per call, us", pick("timed", "floor", "reuse", "cpu_us_per_call"),
    pick("timed", "module", "reuse", "cpu_us_per_call"))
row(string.format("peak RSS, kB (run of %s / %s calls)", fmt(floormem, "int"), fmt(memcalls, "int")),
    pick("mem", "floor", nil, "hwm_kb"),
    pick("mem", "module", nil, "hwm_kb"), "int", 1.30, false)
row("cold start, ms (exec to first call done)", median(coldf), median(coldm), "%.2f", 1.20, false)
row("cold start, instructions", cg.floor_cold, cg.module_cold, "int")
-- The same call through dingtalk.core directly (bench/cold_core.lua): what
-- the interpreter and the C core cost before any of the Lua layer.
row("cold start of the C core alone, ms (no Lua layer)", median(coldf), median(coldc), "%.2f")
row("cold start of the C core alone, instructions", cg.floor_cold, cg.core_cold, "int")
row("new client per call: calls per second", pick("new", "floor", "new", "cps"),
    pick("new", "module", "new", "cps"), "int")
row("new client per call: p50 latency, us", pick("new", "floor", "new", "p50_us"),
    pick("new", "module", "new", "p50_us"))
row("new client per call: CPU per call, us", pick("new", "floor", "new", "cpu_us_per_call"),
    pick("new", "module", "new", "cpu_us_per_call"))
local f1k = mem_at("floor", 1000)
local m1k, h1k = mem_at("module", 1000)
local fN = mem_at("floor", floormem)
local mN, hN = mem_at("module", memcalls)
row("RSS after 1,000 calls, kB", f1k, m1k, "int")
row(string.format("RSS after %s (floor) / %s (module) calls, kB", fmt(floormem, "int"), fmt(memcalls, "int")),
    fN, mN, "int")

local function md_table(head, body)
  local t = { "| " .. table.concat(head, " | ") .. " |",
              "|" .. string.rep("---|", #head) }
  for _, r in ipairs(body) do t[#t + 1] = "| " .. table.concat(r, " | ") .. " |" end
  return table.concat(t, "\n")
end

-- profile: per-call difference of the long and short runs, by function ------
local function load_annotation(path)
  local t, in_funcs = {}, false
  local f = io.open(path)
  if not f then return t end
  for line in f:lines() do
    if line:match("^Ir%s+file:function") then in_funcs = true
    elseif in_funcs then
      local ir, name = line:match("^%s*([%d,]+) %(%s*[%d.]+%%%)%s+(.-)%s*$")
      if ir then t[name] = (t[name] or 0) + tonumber((ir:gsub(",", ""))) end
    end
  end
  f:close()
  return t
end

local function per_call(side)
  local s = load_annotation(out_dir .. "/cg." .. side .. ".short.txt")
  local l = load_annotation(out_dir .. "/cg." .. side .. ".long.txt")
  local t = {}
  for k, v in pairs(l) do t[k] = (v - (s[k] or 0)) / extra end
  for k, v in pairs(s) do if not l[k] then t[k] = -v / extra end end
  return t
end

local function short_obj(o)
  o = o:match("([^/]+)$") or o
  if o:match("^libc%.so") then return "libc" end
  if o:match("^libcurl") then return "libcurl" end
  if o:match("^ld%-linux") then return "ld.so" end
  if o:match("cjson") then return "lua-cjson" end
  if o == "core.so" then return "dingtalk/core.so" end
  if o == lua then return lua .. " (interpreter)" end
  return o
end

local function pretty(name)
  local file_fn, obj = name:match("^(.-) %[(.*)%]$")
  if not file_fn then return name, "?" end
  local fn = file_fn:match(":([^:]+)$") or file_fn
  return fn, short_obj(obj)
end

local pf, pm = per_call("floor"), per_call("module")
local by_obj = {}
for side, t in pairs{ floor = pf, module = pm } do
  for k, v in pairs(t) do
    local _, o = pretty(k)
    by_obj[o] = by_obj[o] or { floor = 0, module = 0 }
    by_obj[o][side] = by_obj[o][side] + v
  end
end
local obj_rows = {}
for o, v in pairs(by_obj) do
  if math.abs(v.floor) >= 50 or math.abs(v.module) >= 50 then
    obj_rows[#obj_rows + 1] = { o, v.floor, v.module }
  end
end
table.sort(obj_rows, function(a, b) return a[3] > b[3] end)
local obj_md = {}
for _, r in ipairs(obj_rows) do
  obj_md[#obj_md + 1] = { r[1], fmt(r[2], "int"), fmt(r[3], "int"), fmt(r[3] - r[2], "int"),
                          string.format("%.1f%%", 100 * r[3] / ir_module) }
end

local fn_rows = {}
for k, v in pairs(pm) do fn_rows[#fn_rows + 1] = { k, v, pf[k] or 0 } end
table.sort(fn_rows, function(a, b) return a[2] > b[2] end)
local fn_md = {}
for i = 1, math.min(20, #fn_rows) do
  local fn, o = pretty(fn_rows[i][1])
  fn_md[#fn_md + 1] = { "`" .. fn .. "`", o, fmt(fn_rows[i][2], "int"),
                        string.format("%.1f%%", 100 * fn_rows[i][2] / ir_module), fmt(fn_rows[i][3], "int") }
end

-- pieces of the call
local parts_md = {}
local P = R.parts and R.parts[1]
if P then
  local names = {
    { "lua_layer", "whole Lua layer, C core stubbed (includes the caller's args table)" },
    { "args_table", "the caller's `{ robotCode =, token = }` table" },
    { "check_args", "`check.args` (type, unknown keys)" },
    { "check_string", "`check.string` x2 (robotCode, token)" },
    { "request", "`client:request` (retry loop, hook, token choice) down to the stub, incl. `post`" },
    { "post", "`client:post` (transport choice, `endpoint .. path`) down to the stub" },
    { "url", "`endpoint .. path` alone" },
    { "encode", "`cjson.encode{ robotCode = }` (memoised per robot code now)" },
    { "decode", "`cjson.decode('{\"result\":true}')` (what the mapping did before its exact-answer fast path)" },
    { "map", "`core.map(200, {}, body, \"result\")` (the C mapping, from Lua, with a headers table)" },
  }
  for _, n in ipairs(names) do
    if P[n[1]] then parts_md[#parts_md + 1] = { n[2], fmt(P[n[1]], "int") } end
  end
end

-- environment -------------------------------------------------------------
local cpu = sh("grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'")
local env = {
  date = os.date("!%Y-%m-%d %H:%M UTC"),
  machine = string.format("%s, %s cores, %s", cpu, sh("nproc"), sh("uname -sr")),
  os = sh(". /etc/os-release && echo $PRETTY_NAME"),
  versions = string.format("%s; %s; nginx %s; %s; gcc %s", sh(lua .. " -v"):match("^Lua [%d.]+") or lua,
    sh("curl-config --version") ~= "" and sh("curl-config --version") or "libcurl",
    (sh("nginx -v 2>&1"):match("nginx/([%d.]+)") or "?"), sh("valgrind --version"),
    sh("gcc -dumpfullversion")),
  -- BENCH_COMMIT names the tree when it is not a git checkout (an export)
  commit = os.getenv("BENCH_COMMIT") or (sh("git rev-parse --short HEAD")
    .. (sh("git status --porcelain lua src") ~= "" and " + uncommitted changes in lua/ or src/" or "")),
}

local function targets_md()
  local t = {}
  for _, x in ipairs(targets) do
    t[#t + 1] = string.format("- %s: module/floor %.2f, target %s %.2f: **%s**", x.name, x.ratio,
                              x.higher and ">=" or "<=", x.target, x.ok and "met" or "missed")
  end
  return table.concat(t, "\n")
end

local ka = R.keepalive[1]
local rq = R.request[1]
local md = {}
local function add(s) md[#md + 1] = s end
add("# dingtalk bench: latest figures")
add("")
add(string.format("- date: %s", env.date))
add(string.format("- machine: %s (%s)", env.machine, env.os))
add(string.format("- versions: %s", env.versions))
add(string.format("- commit: %s", env.commit))
add(string.format("- command: `make bench` (bench/run), %.0f s in all", elapsed / 1e6))
add("- calls per second: median of the runs; its ratio is the median of each round's module/floor")
local st = R.steal and R.steal[1]
if st and st.ticks > 0 then
  add(string.format("- CPU stolen by the hypervisor during the wall-clock runs: %.0f%% of the machine's CPU time "
      .. "(wall-clock figures swing with it; instructions do not)", 100 * st.steal / st.ticks))
end
add(string.format("- sizes: %d x %d calls per side (alternating) after %d warm-up; new client per call %d; "
    .. "memory run %s (floor %s); cold start x%d; callgrind %d vs %d calls",
    #(R.timed or {}) // 2, R.timed[1].calls, tonumber(os.getenv("BENCH_WARM") or 2000),
    R.new[1].calls, fmt(memcalls, "int"), fmt(floormem, "int"), ncold, cg.short, cg.long))
add(string.format("- fairness: both send the same %d request bytes (checked); %d calls used %d connection (floor) "
    .. "and %d (module); a new client per call used %d connections for %d calls",
    rq.bytes, ka.floor_reqs, ka.floor_conns, ka.module_conns, ka.module_new_conns, ka.module_new_reqs))
add("")
add(md_table({ "", "floor (C)", "module (" .. lua .. ")", "module/floor", "target" }, rows))
add("")
add(targets_md())
add("")
local function each(v)
  local t = {}
  for i, x in ipairs(v) do t[i] = fmt(x, "int") end
  return table.concat(t, ", ")
end
add(string.format("- instructions per call, each callgrind pair (the table has the median): floor %s; module %s",
    each(ir_floor_all), each(ir_module_all)))
add(string.format("- reused client vs a new client per call (module): %.1fx the calls per second",
    (pick("timed", "module", "reuse", "cps") or 0) / (pick("new", "module", "new", "cps") or 1)))
if m1k and mN then
  add(string.format("- module memory after 1,000 calls %s kB RSS (Lua heap %.0f kB), after %s calls %s kB "
      .. "(Lua heap %.0f kB): %+d kB", fmt(m1k, "int"), h1k, fmt(memcalls, "int"), fmt(mN, "int"), hN, mN - m1k))
end
add("")
add("## Where a call's instructions go (callgrind, per call: (long - short) / extra calls)")
add("")
add(md_table({ "object", "floor", "module", "module - floor", "share of module" }, obj_md))
add("")
add("Top functions of a module call (self cost; libcurl and " .. lua .. " are stripped, so their "
    .. "internal functions show as addresses):")
add("")
add(md_table({ "function", "object", "Ir/call", "share", "floor Ir/call" }, fn_md))
if #parts_md > 0 then
  add("")
  add(string.format("Pieces of a module call, measured on their own (callgrind, %d times each, "
      .. "minus an empty loop):", P.n))
  add("")
  add(md_table({ "piece", "Ir/call" }, parts_md))
end
add("")
local text = table.concat(md, "\n")
local f = assert(io.open(out_dir .. "/latest.md", "w"))
f:write(text)
f:close()

-- terminal: the main table and the ratios
print()
print(md_table({ "", "floor (C)", "module (" .. lua .. ")", "module/floor", "target" }, rows))
print()
print(targets_md())
if st and st.ticks > 0 then
  print(string.format("(CPU stolen by the hypervisor during the wall-clock runs: %.0f%%)", 100 * st.steal / st.ticks))
end
print()
print("By object, instructions per call (floor / module):")
for i = 1, math.min(6, #obj_md) do
  print(string.format("  %-22s %10s %10s", obj_md[i][1], obj_md[i][2], obj_md[i][3]))
end
print()
print(string.format("Full report: %s/latest.md (%.0f s)", out_dir, elapsed / 1e6))
