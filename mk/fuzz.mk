# Fuzzing the response mapping (core.map) with libFuzzer: fuzz/fuzz_map.c.
# The fuzzer is a standalone program with Lua 5.4 and lua-cjson linked in
# statically; src/*.c is compiled into it with ASan + UBSan.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 1
# -jobs=1 would send the output to ./fuzz-0.log: parallel runs only when asked
FUZZ_PAR      = $(if $(filter-out 1,$(FUZZ_JOBS)),-fork=$(FUZZ_JOBS))
FUZZ_OUT      = fuzz/out
FUZZ_BIN      = $(FUZZ_OUT)/fuzz_map
FUZZ_LIBDIR   = /usr/lib/x86_64-linux-gnu
FUZZ_CFLAGS   = -g -O1 -std=c99 -Wall -Wextra -Werror \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_LIBS     = $(FUZZ_LIBDIR)/liblua5.4-cjson.a $(FUZZ_LIBDIR)/liblua5.4.a $(CORE_LIBS) -lm
FUZZ_ARGS     = -max_len=4096 -timeout=10 -rss_limit_mb=2048 -dict=fuzz/map.dict \
                -artifact_prefix=$(FUZZ_OUT)/ -print_final_stats=1

.PHONY: fuzz fuzz-ci fuzz-build fuzz-regressions fuzz-deps

fuzz-deps:   ## install what fuzzing needs beyond `make deps` (clang, libFuzzer, static Lua 5.4)
	@tools/fuzz-deps

$(FUZZ_BIN): fuzz/fuzz_map.c $(SRC) $(HDR) | fuzz-deps
	@mkdir -p $(@D) $(FUZZ_OUT)/corpus
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(call lua_cflags,lua5.4) $(CURL_CFLAGS) fuzz/fuzz_map.c $(SRC) -o $@ $(FUZZ_LIBS)

fuzz-build: $(FUZZ_BIN)   ## build the libFuzzer target fuzz/out/fuzz_map (clang, ASan+UBSan)

# The regressions and the seeds replay first: a known crash fails at once.
fuzz-regressions: $(FUZZ_BIN)   ## replay fuzz/regressions and the seed corpus through the fuzzer
	@$(FUZZ_BIN) $(wildcard fuzz/regressions/*) fuzz/corpus/map/* >$(FUZZ_OUT)/replay.log 2>&1 \
	  || { cat $(FUZZ_OUT)/replay.log; echo "fuzz-regressions: FAILED (log: $(FUZZ_OUT)/replay.log)"; exit 1; }
	@echo "fuzz-regressions: $$(grep -c '^Executed' $(FUZZ_OUT)/replay.log) inputs replayed, no failure"

# New finds go to fuzz/out/corpus (ignored); the seeds in fuzz/corpus/map
# stay small. The whole log is fuzz/out/fuzz.log; a crash or an invariant
# violation leaves its input in fuzz/out/crash-* (or leak-*, timeout-*, oom-*).
fuzz: fuzz-regressions   ## run the fuzzer for FUZZ_SECONDS (default 60) seconds
	@echo "fuzz: $(FUZZ_SECONDS) s (log: $(FUZZ_OUT)/fuzz.log)"
	@$(FUZZ_BIN) $(FUZZ_ARGS) -max_total_time=$(FUZZ_SECONDS) $(FUZZ_PAR) \
	  $(FUZZ_OUT)/corpus fuzz/corpus/map >$(FUZZ_OUT)/fuzz.log 2>&1; rc=$$?; \
	if [ $$rc -ne 0 ]; then \
	  grep -v -E '^#[0-9]+ ' $(FUZZ_OUT)/fuzz.log | tail -n 60; \
	  echo "fuzz: FAILED (exit $$rc). Keep the input: cp $(FUZZ_OUT)/<crash-file> fuzz/regressions/<name>,"; \
	  echo "      replay it: $(FUZZ_BIN) fuzz/regressions/<name>"; \
	  exit 1; \
	fi; \
	grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' $(FUZZ_OUT)/fuzz.log | sed 's/^stat::/    /'; \
	echo "fuzz: no crash, $$(ls $(FUZZ_OUT)/corpus | wc -l) inputs in $(FUZZ_OUT)/corpus"

fuzz-ci:   ## a bounded fuzz run for CI (~20 s)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20
