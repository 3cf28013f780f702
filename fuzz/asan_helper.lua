-- busted --helper for make check-asan (tools/memcheck asan).
--
-- The suite's interpreter gets the sanitized core (DT_ASAN_CORE, i.e.
-- build/asan/lua5.4/dingtalk/core.so) through package.preload, while
-- package.cpath stays on the regular build/lua5.4: child processes that load
-- the module themselves (bin/dingtalk, with LUA_CPATH = package.cpath) run
-- without the ASan runtime and so must get the regular build.
local so = assert(os.getenv("DT_ASAN_CORE"), "DT_ASAN_CORE is not set")
local open = assert(package.loadlib(so, "luaopen_dingtalk_core"))
package.preload["dingtalk.core"] = open
io.stderr:write("check-asan: dingtalk.core is ", so, "\n")

-- A helper named in .busted still runs (ours took its place on the command line).
local conf = loadfile(".busted")
conf = conf and conf()
local theirs = conf and conf.default and conf.default.helper
if type(theirs) == "string" and theirs ~= "" then dofile(theirs) end
