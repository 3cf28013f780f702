-- bench/cold.lua: the module's cold start, the counterpart of `floor ENDPOINT
-- 1 --quiet`: a fresh interpreter, require "dingtalk", a client, one call,
-- exit. Kept apart from module.lua so that compiling the bench's own
-- argument parsing and report code is not counted as the module's start.
--
--   lua5.4 bench/cold.lua ENDPOINT
local dingtalk = require "dingtalk"
local c = dingtalk.new{ endpoint = arg[1] }
if c.robot.clear_plugins{ robotCode = "dingbench", token = "bench-token-0123456789abcdef" } ~= true then
  io.stderr:write("cold.lua: unexpected result\n")
  os.exit(1)
end
