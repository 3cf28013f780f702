-- A second nginx (not the emulator's) that runs the module inside
-- lua-nginx-module, for spec/30-openresty_spec.lua.
--
-- One file, two roles:
--   * in busted:  local openresty = require "spec.helpers.openresty"
--                 local o = openresty.start{ cafile =, other_cafile =, init_endpoint =,
--                                            resolver = "127.0.0.1:53" }
--                 openresty.get(o, "/run", { robotCode =, token =, endpoint =, ... })
--                 openresty.stop(o)
--   * in nginx:   the handlers its locations call (openresty.app.*); they run
--                 one clear_plugins call through the module and answer JSON
--                 { ok =, result =, err = {every field}, phase =, cosockets =, ms =,
--                 strings = (with reach=1) }; /post calls the cosocket transport directly.
--
-- nginx: worker_processes 1, its own prefix under /tmp, a free port,
-- lua_package_path "<repo>/lua/?.lua;<repo>/?.lua;;",
-- lua_package_cpath "<repo>/build/luajit/?.so;;".

-- luacheck: globals ngx
-- (the handlers run inside nginx, which provides `ngx`; nothing here sets it)

local M = {}

-------------------------------------------------------------------------------
-- inside nginx

local app = {}
M.app = app

local clients = {}

-- One client per distinct option set, kept for the worker's life (the
-- cosocket pool is per worker anyway).
local function client_for(args)
  local dingtalk = require "dingtalk"
  local key = table.concat({ args.endpoint or "", args.timeout or "", args.connect_timeout or "",
    args.max_body or "", args.transport or "", args.cafile or "", args.retries or "" }, "|")
  local c = clients[key]
  if not c then
    c = dingtalk.new{
      endpoint = args.endpoint,
      timeout = tonumber(args.timeout),
      connect_timeout = tonumber(args.connect_timeout),
      max_body = tonumber(args.max_body),
      transport = args.transport ~= "" and args.transport or nil,
      cafile = args.cafile,
      retries = tonumber(args.retries),
    }
    clients[key] = c
  end
  return c
end

-- Which transport served a call: the cosocket one's post is wrapped once to
-- mark the coroutine it ran in (a timer runs in a coroutine of its own).
local via_ngx = setmetatable({}, { __mode = "k" })
local wrapped = false

local function watch(transport)
  if wrapped then return end
  wrapped = true
  local post = transport.post
  transport.post = function(...)
    via_ngx[coroutine.running() or "main"] = true
    return post(...)
  end
end

-- The request's arguments: the query string, and the token from the
-- x-test-token header (kept out of the request line, which nginx logs).
local function request_args()
  local args = ngx.req.get_uri_args()
  args.token = ngx.req.get_headers()["x-test-token"]
  return args
end

-- Runs one call (with `client`, or one made from the args) and returns the
-- table the spec compares.
function app.call(args, client)
  local ngx = ngx
  local transport = require "dingtalk.transport.ngx"
  watch(transport)
  local co = coroutine.running() or "main"
  via_ngx[co] = nil
  ngx.update_time()
  local t0 = ngx.now()
  local res = { phase = ngx.get_phase(), cosockets = transport.usable() }
  local ok, v = pcall(function()
    return (client or client_for(args)).robot.clear_plugins{ robotCode = args.robotCode, token = args.token }
  end)
  ngx.update_time()
  res.ms = math.floor((ngx.now() - t0) * 1000 + 0.5)
  res.via = via_ngx[co] and "ngx" or "curl"
  return app.outcome(res, ok, v, args.reach)
end

-- res with ok and the result or the error's fields; reach: also every
-- string reachable from the error, its tostring included (for specs that
-- search errors for a secret: JSON would not carry metatables or keys
-- cjson cannot encode).
function app.outcome(res, ok, v, reach)
  res.ok = ok
  if ok then
    res.result = v
  elseif type(v) == "table" then
    local e = {}
    for k, x in pairs(v) do e[k] = x end
    res.err = e
    if reach and reach ~= "" then
      res.strings = require("spec.helpers.reachable").strings(v)
      res.strings[#res.strings + 1] = tostring(v)
    end
  else
    res.err = { lua_error = tostring(v) }
  end
  return res
end

-- content_by_lua: one request straight through the cosocket transport's
-- post (not the client's retry loop), with its once and secret arguments:
-- robotCode= (the clear call) or appKey= (the token call, the secret from
-- the x-test-secret header), once=true, plus the client options.
function app.post()
  local cjson = require "cjson"
  local args = request_args()
  local secret = ngx.req.get_headers()["x-test-secret"]
  local transport = require "dingtalk.transport.ngx"
  local path, body, field, token
  if args.appKey then
    path, field = "/v1.0/oauth2/accessToken", "accessToken"
    body = cjson.encode{ appKey = args.appKey, appSecret = secret }
  else
    path, field, token = "/v1.0/robot/plugins/clear", "result", args.token
    body = cjson.encode{ robotCode = args.robotCode }
  end
  ngx.update_time()
  local t0 = ngx.now()
  local ok, v = transport.post(client_for(args), path, token, body, field, "POST",
                               args.once == "true", secret)
  ngx.update_time()
  local res = { ms = math.floor((ngx.now() - t0) * 1000 + 0.5) }
  app.say(app.outcome(res, ok == true, v, args.reach))
end

function app.say(res)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(require("cjson").encode(res))
end

-- content_by_lua: the call in the content phase
function app.content()
  app.say(app.call(request_args()))
end

-- rewrite_by_lua / access_by_lua: the call there, the answer in content
function app.early()
  ngx.ctx.res = app.call(request_args())
end

function app.late()
  app.say(ngx.ctx.res or { lua_error = "no result from the earlier phase" })
end

-- content_by_lua: the call in a zero-delay timer, waited for here
function app.timer()
  local semaphore = require "ngx.semaphore"
  local sema = semaphore.new()
  local args = request_args()
  local res
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    res = app.call(args)
    sema:post(1)
  end)
  if not ok then return app.say({ lua_error = "timer: " .. tostring(err) }) end
  sema:wait(30)
  app.say(res or { lua_error = "timer gave no result" })
end

-- set_by_lua: no cosockets there, so the module must fall back to libcurl
function app.set()
  return require("cjson").encode(app.call(request_args()))
end

-- init_by_lua: load the module in the master, and make one call there
-- (libcurl: no cosockets in init) against the emulator.
function app.init(endpoint, token)
  local dingtalk = require "dingtalk"
  local res = { loaded = type(dingtalk.new) == "function" }
  if endpoint ~= "" then
    -- a client of its own, closed here: a libcurl connection opened in the
    -- master would otherwise be inherited by every worker
    local c = dingtalk.new{ endpoint = endpoint }
    local call = app.call({ robotCode = "dingbot-ok", token = token }, c)
    c:close()
    for k, v in pairs(call) do res[k] = v end
  end
  ngx.shared.spec:set("init", require("cjson").encode(res))
end

function app.init_result()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(ngx.shared.spec:get("init") or "{}")
end


-------------------------------------------------------------------------------
-- in busted: start, query, stop

local CONF = [[
worker_processes 1;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log info;
worker_shutdown_timeout 1s;

events {
    worker_connections 1024;
}

http {
    access_log off;     # the token rides in the query string of these tests
    client_body_temp_path temp/body;
    proxy_temp_path       temp/proxy;
    fastcgi_temp_path     temp/fastcgi;
    uwsgi_temp_path       temp/uwsgi;
    scgi_temp_path        temp/scgi;

    lua_package_path  "${ROOT}/lua/?.lua;${ROOT}/?.lua;;";
    lua_package_cpath "${ROOT}/build/luajit/?.so;;";
    lua_shared_dict spec 1m;
    lua_ssl_trusted_certificate ${CAFILE};
    lua_ssl_verify_depth 3;
    ${RESOLVER}

    init_by_lua_block {
        require("spec.helpers.openresty").app.init("${INIT_ENDPOINT}", "${TOKEN}")
    }

    server {
        listen 127.0.0.1:${PORT};
        default_type application/json;

        location = /health { return 200 "ok\n"; }
        location = /init   { content_by_lua_block { require("spec.helpers.openresty").app.init_result() } }
        location = /run    { content_by_lua_block { require("spec.helpers.openresty").app.content() } }
        location = /post   { content_by_lua_block { require("spec.helpers.openresty").app.post() } }
        location = /rewrite {
            rewrite_by_lua_block { require("spec.helpers.openresty").app.early() }
            content_by_lua_block { require("spec.helpers.openresty").app.late() }
        }
        location = /access {
            access_by_lua_block  { require("spec.helpers.openresty").app.early() }
            content_by_lua_block { require("spec.helpers.openresty").app.late() }
        }
        location = /timer  { content_by_lua_block { require("spec.helpers.openresty").app.timer() } }
        location = /set {
            set_by_lua_block $res { return require("spec.helpers.openresty").app.set() }
            return 200 $res;
        }
        # the same call with a CA that did not sign the emulator's certificate
        location = /run-other-ca {
            lua_ssl_trusted_certificate ${OTHER_CAFILE};
            content_by_lua_block { require("spec.helpers.openresty").app.content() }
        }
    }
}
]]

local q = require("spec.helpers.shell").q

local function run(cmd)
  local a = os.execute(cmd)
  return a == true or a == 0
end

local read_file = require("spec.helpers.shell").read

local capture = require("spec.helpers.shell").capture

local function root()
  local src = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  local r = src:match("^(.-)/?spec/helpers/openresty%.lua$")
  if not r or r == "" then r = "." end
  if r:sub(1, 1) ~= "/" then r = capture("pwd"):gsub("%s+$", "") .. "/" .. r:gsub("^%./?", "") end
  return (r:gsub("/%.?$", ""))
end

-- running and not a zombie
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("%)%s+(%a)")
  return state ~= "Z" and state ~= "X"
end

local function free_port(socket)
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function new_prefix()
  local o = { root = root() }
  o.prefix = capture("mktemp -d -t dingtalk-openresty.XXXXXX"):gsub("%s+$", "")
  assert(o.prefix ~= "", "mktemp failed")
  assert(run("mkdir -p " .. q(o.prefix .. "/conf") .. " " .. q(o.prefix .. "/logs")
    .. " " .. q(o.prefix .. "/temp") .. " && chmod 755 " .. q(o.prefix)))
  return o
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Starts nginx in o.prefix with the conf make_conf(port) gives, on a free
-- port (a few tries if another process takes it first). env: "K=V ..."
-- for the nginx command line.
local function boot(o, make_conf, env)
  local socket = require "socket"
  local last
  for _ = 1, 5 do
    o.port = free_port(socket)
    write_file(o.prefix .. "/conf/nginx.conf", make_conf(o.port))
    local started = run((env or "") .. " nginx -p " .. q(o.prefix .. "/") .. " -c conf/nginx.conf"
      .. " -e logs/error.log </dev/null >>" .. q(o.prefix .. "/logs/stdout.log") .. " 2>&1")
    if started then
      local deadline = socket.gettime() + 5
      repeat
        o.pid = o.pid or tonumber((read_file(o.prefix .. "/logs/nginx.pid") or ""):match("%d+"))
        local c = socket.tcp()
        c:settimeout(0.2)
        local up = c:connect("127.0.0.1", o.port)
        c:close()
        if o.pid and up then
          o.url = "http://127.0.0.1:" .. o.port
          return o
        end
        socket.sleep(0.02)
      until socket.gettime() > deadline
    end
    last = (read_file(o.prefix .. "/logs/error.log") or "") .. (read_file(o.prefix .. "/logs/stdout.log") or "")
    o.pid = o.pid or tonumber((read_file(o.prefix .. "/logs/nginx.pid") or ""):match("%d+"))
    if o.pid then M.stop(o, true) end
    if not last:find("Address already in use", 1, true) then break end
  end
  run("rm -rf " .. q(o.prefix))
  error("openresty helper: nginx did not start:\n" .. tostring(last), 3)
end

function M.start(opts)
  opts = opts or {}
  local o = new_prefix()
  local modules = os.getenv("DINGTALK_NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"
  return boot(o, function(port)
    local vars = {
      ROOT = o.root, PORT = port, CAFILE = opts.cafile, OTHER_CAFILE = opts.other_cafile,
      INIT_ENDPOINT = opts.init_endpoint or "", TOKEN = opts.token or "",
      -- a resolver (host:port) for host names; nginx's default wait for it
      -- stated, as the specs rely on it being long
      RESOLVER = opts.resolver and ("resolver " .. opts.resolver .. " ipv6=off;\n"
        .. "    resolver_timeout 30s;") or "",
    }
    return "load_module " .. modules .. "/ndk_http_module.so;\n"
      .. "load_module " .. modules .. "/ngx_http_lua_module.so;\n"
      .. CONF:gsub("%${([%w_]+)}", function(k) return tostring(assert(vars[k], k)) end)
  end)
end

-- The frame of a spec's own nginx: one worker, the module from the repo
-- (the LuaJIT build), a /health location; ${LOCATIONS} and ${HTTP} are the
-- spec's.
local FRAME = [[
load_module ${MODULES}/ndk_http_module.so;
load_module ${MODULES}/ngx_http_lua_module.so;
worker_processes 1;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log info;
worker_shutdown_timeout 1s;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path temp/body;
    proxy_temp_path       temp/proxy;
    fastcgi_temp_path     temp/fastcgi;
    uwsgi_temp_path       temp/uwsgi;
    scgi_temp_path        temp/scgi;
    lua_package_path  "${ROOT}/lua/?.lua;${ROOT}/?.lua;;";
    lua_package_cpath "${ROOT}/build/luajit/?.so;;";
    ${HTTP}
    server {
        listen 127.0.0.1:${PORT};
        location = /health { return 200 "ok\n"; }
        ${LOCATIONS}
    }
}
]]

-- A spec's own nginx: opts.locations (and opts.http, more http{} lines)
-- may use ${ROOT} (the repo), ${PORT} and ${PREFIX}; opts.files (name ->
-- text) are written into the prefix first, e.g. a handler loaded with
-- content_by_lua_file ${PREFIX}/name.lua.
function M.start_conf(opts)
  local o = new_prefix()
  for name, text in pairs(opts.files or {}) do write_file(o.prefix .. "/" .. name, text) end
  local modules = os.getenv("DINGTALK_NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"
  return boot(o, function(port)
    local vars = { ROOT = o.root, PORT = port, PREFIX = o.prefix, MODULES = modules,
                   LOCATIONS = opts.locations or "", HTTP = opts.http or "" }
    local function fill(t) return (t:gsub("%${([%w_]+)}", function(k) return tostring(assert(vars[k], k)) end)) end
    vars.LOCATIONS, vars.HTTP = fill(vars.LOCATIONS), fill(vars.HTTP)
    return fill(FRAME)
  end)
end

-- examples/openresty/nginx.conf as it stands (only its port changed, and
-- its worker count to opts.workers if given), in the layout its header
-- describes: lua/, lib/ and handlers/ link into the repo,
-- conf/dingtalk-ca.pem is opts.cafile. opts.endpoint and opts.token go in
-- through the environment (DINGTALK_ENDPOINT, DINGTALK_TOKEN), and so does
-- opts.env (name -> value).
function M.start_example(opts)
  local o = new_prefix()
  local conf = assert(read_file(o.root .. "/examples/openresty/nginx.conf"), "no example nginx.conf")
  assert(run("ln -s " .. q(o.root .. "/lua") .. " " .. q(o.prefix .. "/lua")
    .. " && ln -s " .. q(o.root .. "/build/luajit") .. " " .. q(o.prefix .. "/lib")
    .. " && ln -s " .. q(o.root .. "/examples/openresty") .. " " .. q(o.prefix .. "/handlers")
    .. " && cp " .. q(opts.cafile) .. " " .. q(o.prefix .. "/conf/dingtalk-ca.pem")))
  local env = { "DINGTALK_ENDPOINT=" .. q(opts.endpoint or ""), "DINGTALK_TOKEN=" .. q(opts.token or "") }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  return boot(o, function(port)
    local out, n = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:" .. port .. ";")
    assert(n == 1, "the example's listen line changed")
    if opts.workers then
      out, n = out:gsub("\nworker_processes auto;", "\nworker_processes " .. opts.workers .. ";")
      assert(n == 1, "the example's worker_processes line changed")
    end
    return out
  end, table.concat(env, " "))
end

-- The emulator and an nginx that loads the module, for a spec's setup():
-- start(emu) starts the nginx (it may need the emulator's URL or CA).
-- Returns emu, nginx; stops the emulator again when the nginx fails.
function M.start_with_emulator(start)
  local emulator = require "spec.helpers.emulator"
  assert(read_file(root() .. "/build/luajit/dingtalk/core.so"),
         "build/luajit/dingtalk/core.so is missing: nginx loads the LuaJIT build (make build LUA=luajit)")
  local emu = emulator.start()
  local ok, nginx = pcall(start, emu)
  if not ok then
    emulator.stop(emu)
    error(nginx, 0)
  end
  return emu, nginx
end

-- Graceful stop of the master and its worker; kill -9 if that hangs.
-- Leaves no process behind. keep_prefix: for start()'s retries.
function M.stop(o, keep_prefix)
  local socket = require "socket"
  local pid = o.pid
  if pid and alive(pid) then
    local pids = { pid }
    for c in capture("pgrep -P " .. math.floor(pid)):gmatch("%d+") do pids[#pids + 1] = tonumber(c) end
    run("kill -QUIT " .. math.floor(pid))
    local deadline = socket.gettime() + 5
    local any
    repeat
      any = false
      for _, p in ipairs(pids) do if alive(p) then any = true end end
      if any then socket.sleep(0.02) end
    until not any or socket.gettime() > deadline
    if any then
      for _, p in ipairs(pids) do if alive(p) then run("kill -9 " .. p) end end
    end
  end
  o.pid = nil
  if not keep_prefix and o.prefix and o.prefix:match("^/tmp/dingtalk%-openresty%.") then
    run("rm -rf " .. q(o.prefix))
  end
end

function M.error_log(o)
  return read_file(o.prefix .. "/logs/error.log") or ""
end

-- The request line for path + query (query values URL-escaped).
function M.target(path, query)
  local url = require "socket.url"
  local parts = {}
  local keys = {}
  for k in pairs(query or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = url.escape(k) .. "=" .. url.escape(tostring(query[k])) end
  if #parts == 0 then return path end
  return path .. "?" .. table.concat(parts, "&")
end

-- Raw HTTP/1.0-style exchange (Connection: close) with a plain TCP socket:
-- send() and receive() apart, so a spec can have many in flight.
function M.send(o, path, query, token, method, secret)
  local socket = require "socket"
  local c = assert(socket.tcp())
  c:settimeout(30)
  assert(c:connect("127.0.0.1", o.port))
  assert(c:send((method or "GET") .. " " .. M.target(path, query) .. " HTTP/1.0\r\nHost: 127.0.0.1\r\n"
    .. (token and "x-test-token: " .. token .. "\r\n" or "")
    .. (secret and "x-test-secret: " .. secret .. "\r\n" or "")
    .. (method == "POST" and "Content-Length: 0\r\n" or "") .. "\r\n"))
  return c
end

function M.receive(c)
  local cjson = require "cjson"
  local raw, err = c:receive("*a")
  c:close()
  assert(raw, err)
  local status = tonumber(raw:match("^HTTP/1%.%d (%d%d%d)"))
  local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
  local ok, t = pcall(cjson.decode, body or "")
  return status, ok and t or body, head
end

-- GET path?query -> status, decoded JSON (or the raw body); the token and
-- secret go in headers (x-test-token, x-test-secret), not the request line
function M.get(o, path, query, token, secret)
  return M.receive(M.send(o, path, query, token, nil, secret))
end

-- POST path (empty body) -> status, decoded JSON (or the raw body), raw head
function M.post(o, path)
  return M.receive(M.send(o, path, nil, nil, "POST"))
end

return M
