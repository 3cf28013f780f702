-- luacheck: the module creates no globals; specs use busted's; code that
-- runs inside nginx may read `ngx`.
std = "max"
max_line_length = 120
files["spec"] = { std = "+busted" }
files["emulator"] = { globals = {}, read_globals = { "ngx" } }
files["lua/dingtalk/transport"] = { read_globals = { "ngx" } }
files["examples/openresty"] = { read_globals = { "ngx" } }
files["bench"] = { read_globals = { "ngx" } }
-- a LuaRocks config file sets its settings as globals
files["tools/luarocks-config.lua"] = { allow_defined_top = true, ignore = { "131" } }
