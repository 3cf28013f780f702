-- dh-lua's build-time test, run by lua5.x and by a C program that has the
-- core linked in: the module loads and makes a real call through libcurl
-- (to a closed port on the loopback, so the build needs no network).
local dingtalk = require "dingtalk"
assert(dingtalk._VERSION, "no _VERSION")
local c = dingtalk.new{ endpoint = "http://127.0.0.1:1", timeout = 2000 }
local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingx", token = "t0ken-x" })
assert(not ok and err.code == "transport.connect", tostring(err))
print(_VERSION .. ": dingtalk " .. dingtalk._VERSION .. " ok (" .. err.code .. ")")
