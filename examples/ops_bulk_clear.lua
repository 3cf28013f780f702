-- Ops tooling: clear the quick entries of many bots listed in a file (one
-- robot code per line, # comments allowed), one JSON line per bot on stdout,
-- so the output can go to jq, a log shipper or a ticket.
--
--   DINGTALK_ACCESS_TOKEN=... lua5.4 examples/ops_bulk_clear.lua bots.txt
--
-- Exit status: 0 all cleared (or already empty), 1 some failed, 2 usage.
local cjson = require "cjson"
local dingtalk = require "dingtalk"

local path, token = arg[1], os.getenv("DINGTALK_ACCESS_TOKEN")
if not path or not token then
  io.stderr:write("usage: DINGTALK_ACCESS_TOKEN=... lua examples/ops_bulk_clear.lua FILE\n")
  os.exit(2)
end
local file = path == "-" and io.stdin or assert(io.open(path, "r"))

local client = dingtalk.new{ endpoint = os.getenv("DINGTALK_ENDPOINT"), cafile = os.getenv("DINGTALK_CAFILE") }
local failed = 0
for line in file:lines() do
  local code = line:match("^%s*([^#%s]+)")
  if code then
    local ok, res = pcall(client.robot.clear_plugins, { robotCode = code, token = token })
    local report = { robotCode = code, ok = ok }
    if ok then
      report.cleared = res
    else
      failed = failed + 1
      -- the error table's fields are plain data: copy them, never the token
      report.error = { kind = res.kind, code = res.code, message = res.message,
                       status = res.status, request_id = res.request_id, retryable = res.retryable }
    end
    print(cjson.encode(report))
  end
end
client:close()
os.exit(failed == 0 and 0 or 1)
