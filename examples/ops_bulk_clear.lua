-- Ops tooling: clear the quick entries of many bots listed in a file (one
-- robot code per line, # comments allowed), one JSON line per bot on stdout
-- as each finishes, so the output can go to jq, a log shipper or a ticket.
-- The bots are cleared as one batch (clear_plugins_many): several calls in
-- flight at once, paced, throttling answers waited out and retried.
--
--   DINGTALK_ACCESS_TOKEN=... lua5.4 examples/ops_bulk_clear.lua bots.txt
--   (optional: DINGTALK_CONCURRENCY=16, default 8; DINGTALK_RATE=20 requests a second)
--
-- Pauses (throttling, an IP block) and a stop at the monthly quota are said
-- on stderr. Exit status: 0 all cleared (or already empty), 1 some failed
-- (or were not attempted), 2 usage.
local cjson = require "cjson"
local dingtalk = require "dingtalk"

local path, token = arg[1], os.getenv("DINGTALK_ACCESS_TOKEN")
local concurrency = tonumber(os.getenv("DINGTALK_CONCURRENCY") or "8")
local rate = os.getenv("DINGTALK_RATE") and tonumber(os.getenv("DINGTALK_RATE"))
if not path or not token or not concurrency or (os.getenv("DINGTALK_RATE") and not rate) then
  io.stderr:write("usage: DINGTALK_ACCESS_TOKEN=... [DINGTALK_CONCURRENCY=N] [DINGTALK_RATE=QPS] "
                  .. "lua examples/ops_bulk_clear.lua FILE\n")
  os.exit(2)
end
local file = path == "-" and io.stdin or io.open(path, "r")
if not file then
  io.stderr:write("cannot read " .. path .. "\n")
  os.exit(2)
end
local codes = {}
for line in file:lines() do
  local code = line:match("^%s*([^#%s]+)")
  if code then codes[#codes + 1] = code end
end
if file ~= io.stdin then file:close() end
if #codes == 0 then os.exit(0) end

local client = dingtalk.new{ endpoint = os.getenv("DINGTALK_ENDPOINT"), cafile = os.getenv("DINGTALK_CAFILE") }
local failed = 0
local ok, err = pcall(client.robot.clear_plugins_many, codes, {
  token = token, concurrency = concurrency, rate = rate,
  on_result = function(r)
    local report = { robotCode = r.robotCode, ok = r.ok }
    if r.ok then
      report.cleared = r.result
    else
      failed = failed + 1
      -- the error table's fields are plain data: copy them, never the token
      local e = r.error
      report.error = { kind = e.kind, code = e.code, message = e.message, status = e.status,
                       request_id = e.request_id, retryable = e.retryable, attempts = e.attempts }
    end
    io.stdout:write(cjson.encode(report), "\n")
  end,
  on_event = function(ev)
    if ev.kind == "pause" then
      io.stderr:write(string.format("paused %.0f s (%s)\n", ev.seconds, ev.reason))
    elseif ev.kind == "stop" then
      io.stderr:write("stopped (" .. tostring(ev.reason) .. "): the remaining bots are not attempted\n")
    end
  end,
})
client:close()
if not ok then   -- an argument the library refused (a bad code in the file, a bad option)
  io.stderr:write(tostring(type(err) == "table" and err.message or err), "\n")
  os.exit(2)
end
os.exit(failed == 0 and 0 or 1)
