# mk/bench.mk: `make bench`, the module against a plain-C libcurl floor.
# Everything it builds or writes goes to bench/out/ (git-ignored).

BENCH_OUT = bench/out

$(BENCH_OUT)/floor: bench/floor.c
	@mkdir -p $(@D)
	$(CC) -std=c99 -O2 -g -Wall -Wextra -Werror $(CURL_CFLAGS) $< -o $@ $(CURL_LIBS)

$(BENCH_OUT)/lua5.4/benchclock.so: bench/clock.c
	@mkdir -p $(@D)
	$(CC) -std=c99 -O2 -g -Wall -Wextra -Werror -fPIC -shared $(call lua_cflags,lua5.4) $< -o $@

.PHONY: bench
bench: deps build/lua5.4/dingtalk/core.so $(BENCH_OUT)/floor $(BENCH_OUT)/lua5.4/benchclock.so   ## module vs plain-C libcurl floor on loopback (< 2 min); writes bench/out/latest.md
	@bench/run

.PHONY: bench-bulk
bench-bulk: deps build/lua5.4/dingtalk/core.so $(BENCH_OUT)/lua5.4/benchclock.so   ## many bots against the emulator: the batch at 1/4/16/64, xargs, the limit, memory, --rate (~2 min); writes bench/out/bulk.md
	@bench/bulk
