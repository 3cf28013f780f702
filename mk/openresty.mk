# mk/openresty.mk: the module inside nginx + lua-nginx-module.
# nginx loads the LuaJIT build (build/luajit); the in-process libcurl side
# of the comparison spec uses $(LUA)'s.

.PHONY: test-openresty openresty-example

test-openresty: deps build/luajit/dingtalk/core.so build/$(LUA)/dingtalk/core.so   ## the OpenResty spec under luajit and $(LUA)
	luajit /usr/bin/busted --cpath='./build/luajit/?.so' spec/30-openresty_spec.lua
	$(LUA) /usr/bin/busted --cpath='./build/$(LUA)/?.so' spec/30-openresty_spec.lua

openresty-example: deps build/luajit/dingtalk/core.so   ## run examples/openresty/nginx.conf against the emulator
	@examples/openresty/run.sh
