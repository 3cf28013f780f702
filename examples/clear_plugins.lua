-- Clear a single-chat bot's quick entries from a plain Lua script.
--
--   lua5.4 examples/clear_plugins.lua ROBOT_CODE [ROBOT_CODE...]
--
-- The token comes from DINGTALK_ACCESS_TOKEN; DINGTALK_ENDPOINT picks the
-- platform (default https://api.dingtalk.io; the Chinese platform is
-- https://api.dingtalk.com; `make demo` points it at the local emulator) and
-- DINGTALK_CAFILE adds a CA to trust.
local dingtalk = require "dingtalk"

local token = os.getenv("DINGTALK_ACCESS_TOKEN")
if not token or #arg == 0 then
  io.stderr:write("usage: DINGTALK_ACCESS_TOKEN=... lua examples/clear_plugins.lua ROBOT_CODE...\n")
  os.exit(2)
end

local made, client = pcall(dingtalk.new, {
  endpoint = os.getenv("DINGTALK_ENDPOINT"),   -- nil: the default platform
  cafile = os.getenv("DINGTALK_CAFILE"),
  timeout = 5000,
})
if not made then
  -- an error table (a bad DINGTALK_ENDPOINT, say): its line, not Lua 5.1's
  -- "(error object is not a string)"
  io.stderr:write(tostring(client), "\n")
  os.exit(2)
end

local failed = 0
for _, code in ipairs(arg) do
  local ok, res = pcall(client.robot.clear_plugins, { robotCode = code, token = token })
  if ok then
    print(("%s: cleared = %s"):format(code, tostring(res)))
  else
    failed = failed + 1
    -- Every failure is a table: tostring gives one line for a log, and the
    -- fields let a script decide (retry only when err.retryable, ...).
    print(("%s: %s"):format(code, tostring(res)))
    if type(res) == "table" then
      for _, k in ipairs{ "kind", "code", "message", "status", "request_id", "retryable" } do
        print(("    %-10s = %s"):format(k, tostring(res[k])))
      end
    end
  end
end
client:close()
os.exit(failed == 0 and 0 or 1)
