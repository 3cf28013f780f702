-- bench/cold_core.lua: the cold start of the C core alone, for comparison
-- with bench/cold.lua: the same call through dingtalk.core directly, with
-- no Lua layer compiled (no options checks, retries, robot module). What
-- cold.lua costs above this is the Lua layer's own start-up.
--
--   lua5.4 bench/cold_core.lua ENDPOINT USER_AGENT
local core = require "dingtalk.core"
local c = assert(core.new_client{ user_agent = arg[2] })
local ok, v = core.post(c, arg[1] .. "/v1.0/robot/plugins/clear",
                        "bench-token-0123456789abcdef", '{"robotCode":"dingbench"}', "result")
if not ok or v ~= true then
  io.stderr:write("cold_core.lua: unexpected result\n")
  os.exit(1)
end
