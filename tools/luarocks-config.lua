-- Offline LuaRocks on Debian: lua-cjson comes from the Debian package, which
-- LuaRocks cannot see, so it is declared as provided.
-- Use: LUAROCKS_CONFIG=tools/luarocks-config.lua luarocks --lua-version=5.4 make
rocks_provided = { ["lua-cjson"] = "2.1.0-1" }
