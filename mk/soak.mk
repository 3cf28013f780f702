SOAK_CALLS ?= 100000

.PHONY: check-soak

check-soak: deps build/lua5.4/dingtalk/core.so   ## 100,000 mixed calls against the emulator; RSS must stay within 1 MiB
	@tools/with-emulator sh -c 'LUA_PATH="./lua/?.lua;;" LUA_CPATH="./build/lua5.4/?.so;;" \
	  lua5.4 tools/soak.lua "$$DINGTALK_ENDPOINT" $(SOAK_CALLS)'
