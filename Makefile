# dingtalk: build, test and demo. `make help` lists the targets.
#
# One build per interpreter, under build/<lua>/dingtalk/core.so, from the
# same sources and flags as the rockspec. No -llua: the Lua symbols come from
# the host process (lua5.x, luajit, nginx).

LUA      ?= lua5.4
LUAS     ?= lua5.4 lua5.3 lua5.2 lua5.1 luajit
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -std=c99 -Wall -Wextra -Werror -pedantic
SHARED    = -fPIC -shared -fvisibility=hidden
SRC       = src/dt_core.c src/dt_curl.c src/dt_http.c src/dt_multi.c src/dt_map.c src/dt_error.c \
            src/dt_sha256.c
HDR       = $(wildcard src/*.h)
# The core takes libcurl's headers only and opens the library itself
# (src/dt_curl.h); CURL_LIBS links the bench's plain-C floor.
CURL_CFLAGS = $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   = $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
CORE_LIBS   = -ldl -lpthread
# pkg-config names the Lua headers like the interpreters: lua5.1 ... luajit.
lua_cflags  = $(shell pkg-config --cflags $(1) 2>/dev/null)
# Builds the suite needs whatever the interpreter under test: nginx loads
# the LuaJIT one (spec/30), spec/50 links its own program against Lua 5.4.
# Each target that runs the suite depends on these, so a fresh clone works.
SUITE_BUILDS = build/luajit/dingtalk/core.so build/lua5.4/dingtalk/core.so
PREFIX   ?= /usr/local

.PHONY: help deps build build-all test test-one lint demo rock rock-all install clean
.PHONY: luarocks-build luarocks-install

help:          ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "%-18s %s\n", $$1, $$2 }'

deps:          ## install the Debian packages the build, tests and demo need
	@tools/deps

build/%/dingtalk/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(SHARED) $(call lua_cflags,$*) $(CURL_CFLAGS) $(SRC) -o $@ $(CORE_LIBS)

build: build/$(LUA)/dingtalk/core.so   ## build the core for $(LUA)

build-all: $(foreach l,$(LUAS),build/$(l)/dingtalk/core.so)   ## build the core for every interpreter

test: deps build-all $(SUITE_BUILDS) lint   ## install, build and run the whole suite on every interpreter
	@tools/test $(LUAS)

test-one: deps build $(SUITE_BUILDS)   ## the suite on $(LUA) only (make test-one LUA=luajit)
	@tools/test $(LUA)

lint:          ## luacheck the Lua code
	@luacheck --no-color -q lua spec emulator examples bin tools/*.lua 2>/dev/null | tail -n 1 | tee .lint.out; \
	  grep -q '^Total: 0 warnings / 0 errors' .lint.out; rc=$$?; rm -f .lint.out; exit $$rc

demo: deps build   ## start the local emulator and clear a bot's quick entries through the module
	@tools/demo $(LUA)

rock:          ## luarocks make into ./luarocks-tree for $(LUA) (offline, Debian's lua-cjson)
	@tools/deps install $(LUA)
	@tools/rock $(LUA)

rock-all:      ## luarocks make for Lua 5.1, 5.3, 5.4 and LuaJIT; each installed copy loads and calls
	@for l in lua5.1 lua5.3 lua5.4 luajit; do tools/deps install $$l && tools/rock $$l || exit 1; done

# No root needed: `make install PREFIX=$$HOME/.local` as a user.
install:       ## luarocks make into the tree $(PREFIX) (default /usr/local: what `require "dingtalk"` finds) for $(LUA); the command runs on $(LUA) without luarocks.loader
	@tools/deps install $(LUA)
	@tools/rock $(LUA) $(PREFIX)

# The two steps of the rockspec's build (build.type = "make"), with the
# variables LuaRocks passes: LUA (the interpreter), LUA_INCDIR, CFLAGS,
# LIBFLAG, then LUADIR and LIBDIR (the rock's own directories). The core is
# built outside the checkout's module paths, one directory per interpreter:
# a ./dingtalk/core.so would be found through `./?.so` by every other Lua.
ROCK_BUILD = build/luarocks/$(notdir $(LUA))
LIBFLAG   ?= -shared

luarocks-build:   ## (run by `luarocks make`) build the core into build/luarocks/<interpreter>/
	@mkdir -p $(ROCK_BUILD)/dingtalk
	$(CC) -std=c99 -Wall -Wextra $(CFLAGS) -fPIC -fvisibility=hidden $(LIBFLAG) \
	  $(if $(LUA_INCDIR),-I$(LUA_INCDIR),$(call lua_cflags,$(notdir $(LUA)))) \
	  $(if $(CURL_INCDIR),-I$(CURL_INCDIR),$(CURL_CFLAGS)) $(SRC) -o $(ROCK_BUILD)/dingtalk/core.so $(CORE_LIBS)

luarocks-install: ## (run by `luarocks make`) copy that build and lua/ into LuaRocks' LIBDIR and LUADIR
	@test -n "$(LIBDIR)" -a -n "$(LUADIR)" || { echo "LIBDIR and LUADIR come from luarocks make" >&2; exit 2; }
	mkdir -p $(LIBDIR)/dingtalk $(LUADIR)
	cp $(ROCK_BUILD)/dingtalk/core.so $(LIBDIR)/dingtalk/core.so
	cp -R lua/. $(LUADIR)/

# Every build output, whoever wrote it (.gitignore lists the same places).
clean:         ## remove build outputs (build/, the rock trees, bench and fuzz outputs, the Debian build)
	rm -rf build luarocks-tree .tmp bench/out fuzz/out dingtalk src/*.o *.so .lint.out

# Further targets (bench, memory checks, fuzzing, ...), one file per job.
include $(wildcard mk/*.mk)
