# mk/bench-openresty.mk: `make bench-openresty`, the module's cosocket path
# inside nginx against a hand-written cosocket POST (bench/openresty/).
# Everything it writes goes to bench/out/ (git-ignored).

.PHONY: bench-openresty
bench-openresty: deps build/luajit/dingtalk/core.so   ## module vs hand-written cosocket POST in one nginx worker, wrk at 16/64 (~2 min); writes bench/out/openresty.md
	@bench/openresty/run
