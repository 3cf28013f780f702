-- bench/results.lua: what both report scripts (bench/report.lua, bench/openresty/report.lua)
-- need: a shell command's output, a run's results.tsv by phase, and a median.
-- The scripts run from the checkout's root, so `require "bench.results"` finds this file.
local cjson = require "cjson"

local _M = {}

-- the output of cmd, trailing blanks cut; stderr dropped unless cmd sends it to stdout
function _M.sh(cmd)
  local p = io.popen(cmd:find("2>&1", 1, true) and cmd or cmd .. " 2>/dev/null")
  local s = p:read("*a") or ""
  p:close()
  return (s:gsub("%s+$", ""))
end

-- OUTDIR/results.tsv ("PHASE<TAB>JSON" lines) -> { [phase] = { decoded, ... } }
function _M.load(out_dir)
  local R = {}
  for line in io.lines(out_dir .. "/results.tsv") do
    local phase, json = line:match("^(%S+)\t(.*)$")
    if phase then
      R[phase] = R[phase] or {}
      table.insert(R[phase], cjson.decode(json))
    end
  end
  return R
end

-- the median of a list of numbers (sorted in place); nil for none
function _M.median(t)
  if #t == 0 then return nil end
  table.sort(t)
  local m = (#t + 1) / 2
  return (t[math.floor(m)] + t[math.ceil(m)]) / 2
end

return _M
