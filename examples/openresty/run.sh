#!/bin/bash
# Runs examples/openresty/nginx.conf against the local emulator and shows
# a few answers and the log lines they leave. Everything it starts is
# stopped on exit. Usage: examples/openresty/run.sh  (from anywhere)
# Needs: nginx + libnginx-mod-http-lua, lua5.4 + lua-socket + lua-cjson,
# curl, and build/luajit/dingtalk/core.so (make build LUA=luajit).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$root/build/luajit/dingtalk/core.so" ] || { echo "run: make build LUA=luajit first" >&2; exit 1; }
work=$(mktemp -d -t dingtalk-example.XXXXXX)
chmod 755 "$work"
ngx_pid=
cleanup() {
  [ -n "$ngx_pid" ] && kill -QUIT "$ngx_pid" 2>/dev/null || true
  (cd "$root" && lua5.4 emulator/control.lua stop --prefix "$work/emulator" >/dev/null 2>&1) || true
  for _ in $(seq 50); do [ -n "$ngx_pid" ] && kill -0 "$ngx_pid" 2>/dev/null && sleep 0.1 || break; done
  rm -rf "$work"
}
trap cleanup EXIT

# 1. the emulator (its own nginx), TLS with a test CA
env_lines=$(cd "$root" && lua5.4 emulator/control.lua start --prefix "$work/emulator")
endpoint=$(sed -n 's/^tls_url_localhost=//p' <<<"$env_lines")
cafile=$(sed -n 's/^cafile=//p' <<<"$env_lines")

# 2. the example's layout (see the head of nginx.conf)
p=$work/nginx
mkdir -p "$p/conf" "$p/logs" "$p/temp"
ln -s "$root/lua" "$p/lua"
ln -s "$root/build/luajit" "$p/lib"
ln -s "$root/examples/openresty" "$p/handlers"
cat /etc/ssl/certs/ca-certificates.crt "$cafile" > "$p/conf/dingtalk-ca.pem" 2>/dev/null \
  || cp "$cafile" "$p/conf/dingtalk-ca.pem"
port=${PORT:-18080}
sed "s/listen 127.0.0.1:8080;/listen 127.0.0.1:$port;/" "$root/examples/openresty/nginx.conf" > "$p/conf/nginx.conf"
DINGTALK_ENDPOINT=$endpoint DINGTALK_TOKEN=example-token-0123456789abcdef \
  nginx -p "$p/" -c conf/nginx.conf -e logs/error.log
for _ in $(seq 50); do [ -s "$p/logs/nginx.pid" ] && break; sleep 0.1; done
ngx_pid=$(cat "$p/logs/nginx.pid")
sleep 0.3

# 3. a few calls
for bot in dingbot-ok dingbot-stopped fault-system-error fault-slow-200; do
  printf '\nPOST /bots/%s/clear-plugins\n' "$bot"
  curl -s -S -o - -w '\n(HTTP %{http_code}, %{time_total} s)\n' -X POST "http://127.0.0.1:$port/bots/$bot/clear-plugins"
done
printf '\n20 concurrent calls to a bot that answers after 200 ms:\n'
start=$(date +%s%N)
for _ in $(seq 20); do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/bots/fault-slow-200/clear-plugins" &
done
wait
echo "$(( ($(date +%s%N) - start) / 1000000 )) ms in all"

printf '\nerror.log:\n'
grep 'clear_plugins' "$p/logs/error.log" | sed 's/^/  /'
