# Memory checks of the C core: valgrind memcheck on the regular build, and
# an AddressSanitizer + UndefinedBehaviorSanitizer build. Both run
# fuzz/memsmoke.lua (every path of the core) and then the busted suite under
# lua5.4; tools/memcheck does the running and the judging.

ASAN_CC     ?= gcc
ASAN_CFLAGS  = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined
# The runtime preloaded into lua5.4 (not built with ASan itself).
ASAN_RT     ?= $(shell $(ASAN_CC) -print-file-name=$(if $(filter clang%,$(ASAN_CC)),libclang_rt.asan-x86_64.so,libasan.so))
ASAN_SHARED  = $(if $(filter clang%,$(ASAN_CC)),-shared-libasan)

.PHONY: check-memory check-asan

# An explicit rule: the build/%/dingtalk/core.so pattern does not fit here.
build/asan/lua5.4/dingtalk/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(ASAN_CC) $(WARN) $(ASAN_CFLAGS) $(ASAN_SHARED) $(SHARED) $(call lua_cflags,lua5.4) $(CURL_CFLAGS) $(SRC) -o $@ $(CORE_LIBS)

build/asan/preload.so: fuzz/asan_preload.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -fPIC -shared $< -o $@ -ldl

check-memory: deps $(SUITE_BUILDS)   ## the suite (Lua 5.4; not the #nginx, #slow specs) and fuzz/memsmoke.lua under valgrind memcheck
	@tools/memcheck valgrind

check-asan: deps $(SUITE_BUILDS) build/asan/lua5.4/dingtalk/core.so build/asan/preload.so   ## the suite (Lua 5.4; not the #nginx, #slow specs) against an ASan+UBSan build
	@ASAN_RT=$(ASAN_RT) tools/memcheck asan
