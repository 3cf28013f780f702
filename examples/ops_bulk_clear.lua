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

-- A usage error: what is wrong, the usage line, exit 2 (no traceback).
local function usage(why)
  if why then io.stderr:write("ops_bulk_clear: ", why, "\n") end
  io.stderr:write("usage: DINGTALK_ACCESS_TOKEN=... [DINGTALK_ENDPOINT=URL] [DINGTALK_CAFILE=FILE] "
                  .. "[DINGTALK_CONCURRENCY=N] [DINGTALK_RATE=QPS] lua examples/ops_bulk_clear.lua FILE|-\n")
  os.exit(2)
end

local path, token = arg[1], os.getenv("DINGTALK_ACCESS_TOKEN")
local concurrency = tonumber(os.getenv("DINGTALK_CONCURRENCY") or "8")
local rate = os.getenv("DINGTALK_RATE") and tonumber(os.getenv("DINGTALK_RATE"))
if not path then usage("no FILE of robot codes") end
if not token or token == "" then usage("DINGTALK_ACCESS_TOKEN is not set") end
if not concurrency then usage("DINGTALK_CONCURRENCY is not a number") end
if os.getenv("DINGTALK_RATE") and not rate then usage("DINGTALK_RATE is not a number") end
local file = path == "-" and io.stdin or io.open(path, "r")
if not file then usage("cannot read " .. path) end
local codes = {}
for line in file:lines() do
  local code = line:match("^%s*([^#%s]+)")
  if code then codes[#codes + 1] = code end
end
if file ~= io.stdin then file:close() end
if #codes == 0 then os.exit(0) end

local made, client = pcall(dingtalk.new, { endpoint = os.getenv("DINGTALK_ENDPOINT"),
                                           cafile = os.getenv("DINGTALK_CAFILE") })
-- an option the library refused (DINGTALK_ENDPOINT, DINGTALK_CAFILE): an
-- error table, whose message names the option
if not made then usage(tostring(client)) end
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
  usage(tostring(err))
end
os.exit(failed == 0 and 0 or 1)
