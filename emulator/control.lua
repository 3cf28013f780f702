-- Controller of the local DingTalk Open API emulator (nginx + lua-nginx-module).
--
-- As a module (Lua 5.1-5.4, LuaJIT; needs LuaSocket):
--   local emulator = dofile("emulator/control.lua")   -- or require "emulator.control"
--   local h = emulator.start{ port = n?, tls_port = n?, prefix = dir?, delay_ms = n?,
--                             rate_limit = n? }
--   -- h.url, h.tls_url, h.tls_url_mismatch, h.tls_url_localhost, h.cafile,
--   -- h.other_cafile, h.prefix, h.pid, h.port, h.tls_port
--   emulator.requests(h)  --> array of recorded requests
--   emulator.reset(h)     -- forget the recorded requests, reset the stats
--   emulator.config(h, { delay_ms = n, rate_limit = n })  (also: configure)
--       delay_ms: extra latency for every API request;
--       rate_limit: requests per second per access token on /v1.0/robot/*
--       routes (fixed one-second windows; 0 = none); above it the platform's
--       403 Forbidden.AccessDenied.QpsLimitForAppkeyAndApi
--   emulator.stats(h)     --> { in_flight, max_in_flight, connections, requests,
--       robot_requests, refused }: API requests handled at once now and at
--       most, distinct connections, API and /v1.0/robot/* requests, and
--       answers refused by rate_limit, all since the last reset
--   emulator.is_running(h)
--   emulator.attach(prefix)  --> handle of an emulator started by the CLI
--   emulator.stop(h)
--
-- As a script (for `make demo`):
--   lua5.4 emulator/control.lua start [--port N] [--tls-port N] [--prefix DIR] [--delay-ms N]
--                                     [--rate-limit N]
--   lua5.4 emulator/control.lua stop --prefix DIR
--   lua5.4 emulator/control.lua requests --prefix DIR | reset --prefix DIR | stats --prefix DIR
--   lua5.4 emulator/control.lua config --prefix DIR [--delay-ms N] [--rate-limit N]
--
-- Environment: DINGTALK_EMULATOR_PORT (plain port), DINGTALK_NGINX (nginx binary),
-- DINGTALK_NGINX_MODULES_DIR (dir holding ndk_http_module.so, ngx_http_lua_module.so).

local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local io_open = io.open
local io_popen = io.popen
local os_execute = os.execute
local os_getenv = os.getenv
local tonumber = tonumber
local tostring = tostring
local type = type
local error = error
local ipairs = ipairs
local pairs = pairs
local floor = math.floor
local concat = table.concat

local CHUNK_ARGS = { ... }
local SOURCE = debug.getinfo(1, "S").source

local M = {}

local MARKER = ".dingtalk-emulator-created"
local START_TIMEOUT = 5
local STOP_TIMEOUT = 5

-------------------------------------------------------------------------------
-- small utilities

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute returns 0 on 5.1/LuaJIT (without 5.2 compat) and true on 5.2+
local function run(cmd)
    local a, _, c = os_execute(cmd)
    if a == true or a == 0 then return true end
    return false, c or a
end

local function capture(cmd)
    local p = io_popen(cmd, "r")
    if not p then return "" end
    local out = p:read("*a") or ""
    p:close()
    return out
end

local function read_file(path)
    local f = io_open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

local function write_file(path, s)
    local f, err = io_open(path, "wb")
    if not f then error("cannot write " .. path .. ": " .. tostring(err), 3) end
    f:write(s)
    f:close()
end

local function exists(path)
    local f = io_open(path, "rb")
    if f then f:close() return true end
    return false
end

local function tail(path, n)
    local s = read_file(path)
    if not s then return "(no " .. path .. ")" end
    local lines = {}
    for line in s:gmatch("[^\n]+") do lines[#lines + 1] = line end
    local first = #lines - (n or 20) + 1
    if first < 1 then first = 1 end
    return concat(lines, "\n", first, #lines)
end

local cwd_cache
local function cwd()
    if not cwd_cache then
        cwd_cache = capture("pwd"):gsub("%s+$", "")
    end
    return cwd_cache
end

local function absolute(path)
    if path:sub(1, 1) == "/" then return path end
    path = path:gsub("^%./", "")
    return cwd() .. "/" .. path
end

local function emulator_dir()
    local file = SOURCE:match("^@(.+)$") or "emulator/control.lua"
    local dir = file:match("^(.*)/[^/]*$") or "."
    return (absolute(dir):gsub("/%.$", ""))
end

local function sleep(s) socket.sleep(s) end

local function safe_path(p, what)
    if p:find('["$\\%c;{}]') then
        error(what .. " contains a character nginx.conf cannot take: " .. p, 3)
    end
    return p
end

-------------------------------------------------------------------------------
-- processes

-- true while pid exists and is not a zombie (PID 1 may not reap orphans)
local function alive(pid)
    pid = tonumber(pid)
    if not pid or pid <= 1 then return false end
    local stat = read_file("/proc/" .. pid .. "/stat")
    if stat then
        local state = stat:match("%)%s+(%a)")
        return state ~= "Z" and state ~= "X"
    end
    if exists("/proc/self/stat") then return false end -- /proc works: pid is gone
    return run("kill -0 " .. pid .. " 2>/dev/null")
end

local function is_nginx(pid)
    local cmd = read_file("/proc/" .. pid .. "/cmdline")
    if not cmd then return alive(pid) end
    return cmd:find("nginx", 1, true) ~= nil
end

local function children(pid)
    local list = {}
    for c in capture("pgrep -P " .. floor(pid) .. " 2>/dev/null"):gmatch("%d+") do
        list[#list + 1] = tonumber(c)
    end
    return list
end

local function wait_gone(pids, timeout)
    local deadline = socket.gettime() + timeout
    repeat
        local any = false
        for _, p in ipairs(pids) do
            if alive(p) then any = true break end
        end
        if not any then return true end
        sleep(0.02)
    until socket.gettime() > deadline
    return false
end

-- Stop an nginx master and its workers. Never leaves one behind.
local function kill_nginx(pid)
    pid = tonumber(pid)
    if not pid or not alive(pid) or not is_nginx(pid) then return end
    local all = children(pid)
    table.insert(all, 1, pid)
    run("kill -QUIT " .. pid .. " 2>/dev/null")
    if wait_gone(all, STOP_TIMEOUT) then return end
    for _, c in ipairs(children(pid)) do all[#all + 1] = c end
    for _, p in ipairs(all) do
        if alive(p) and is_nginx(p) then run("kill -9 " .. p .. " 2>/dev/null") end
    end
    wait_gone(all, 1)
end

-------------------------------------------------------------------------------
-- ports

local seeded = false
local function random_base()
    if not seeded then
        local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
        math.randomseed(floor((socket.gettime() * 1000 + addr) % 2147483647))
        seeded = true
    end
    return math.random(20000, 40000)
end

-- SO_REUSEADDR like nginx: a port held only by TIME_WAIT connections is free
local function bindable(host, port)
    local s = socket.tcp()
    if not s then return false end
    s:setoption("reuseaddr", true)
    local ok = s:bind(host, port)
    s:close()
    return ok == 1 or ok == true
end

local function pick_ports(want_plain, want_tls)
    local plain, tls = want_plain, want_tls
    local p = random_base()
    local function next_free(hosts, avoid)
        for _ = 1, 500 do
            p = p + 1
            if p > 60000 then p = 20000 end
            local ok = p ~= avoid
            for _, h in ipairs(hosts) do
                if ok and not bindable(h, p) then ok = false end
            end
            if ok then return p end
        end
        error("no free port found", 3)
    end
    -- given ports: fail fast (nginx itself retries bind() for 2.5 s)
    if plain and not bindable("127.0.0.1", plain) then
        error("127.0.0.1:" .. plain .. ": Address already in use", 3)
    end
    if tls and not (bindable("127.0.0.1", tls) and bindable("127.0.0.2", tls)) then
        error("127.0.0.1/127.0.0.2:" .. tls .. ": Address already in use", 3)
    end
    if not plain then plain = next_free({ "127.0.0.1" }, tls) end
    if not tls then tls = next_free({ "127.0.0.1", "127.0.0.2" }, plain) end
    return plain, tls
end

local function accepts(host, port)
    local s = socket.tcp()
    if not s then return false end
    s:settimeout(0.25)
    local ok = s:connect(host, port)
    s:close()
    return ok == 1 or ok == true
end

-------------------------------------------------------------------------------
-- TLS material

local OPENSSL_EC = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

local function make_certs(prefix)
    local files = { "ca.crt", "server.crt", "server.key", "other-ca.crt" }
    local have = true
    for _, f in ipairs(files) do
        if not exists(prefix .. "/" .. f) then have = false end
    end
    if have then return end
    write_file(prefix .. "/server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        .. "basicConstraints=CA:FALSE\n"
        .. "keyUsage=critical,digitalSignature,keyEncipherment\n"
        .. "extendedKeyUsage=serverAuth\n")
    local cmd = "cd " .. q(prefix) .. " && {"
        .. " openssl req -x509 " .. OPENSSL_EC .. " -keyout ca.key -out ca.crt -days 3650"
        .. " -subj '/CN=DingTalk Emulator Test CA'"
        .. " -addext 'basicConstraints=critical,CA:TRUE'"
        .. " -addext 'keyUsage=critical,keyCertSign,cRLSign' &&"
        .. " openssl req " .. OPENSSL_EC .. " -keyout server.key -out server.csr"
        .. " -subj '/CN=localhost' &&"
        .. " openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        .. " -out server.crt -days 825 -extfile server.ext &&"
        .. " openssl req -x509 " .. OPENSSL_EC .. " -keyout other-ca.key -out other-ca.crt"
        .. " -days 3650 -subj '/CN=DingTalk Emulator Other CA'"
        .. " -addext 'basicConstraints=critical,CA:TRUE'"
        .. " -addext 'keyUsage=critical,keyCertSign,cRLSign' ; }"
        .. " >openssl.log 2>&1"
    if not run(cmd) then
        error("openssl failed:\n" .. tail(prefix .. "/openssl.log", 20), 3)
    end
end

-------------------------------------------------------------------------------
-- config

local function nginx_bin()
    local env = os_getenv("DINGTALK_NGINX")
    if env and env ~= "" then return env end
    if exists("/usr/sbin/nginx") then return "/usr/sbin/nginx" end
    return "nginx"
end

local function render(template, vars)
    return (template:gsub("%${([%w_]+)}", function(name)
        local v = vars[name]
        if v == nil then error("nginx.conf.in: unknown placeholder ${" .. name .. "}", 0) end
        return tostring(v)
    end))
end

local function handle_fields(h)
    h.url = "http://127.0.0.1:" .. h.port
    h.tls_url = "https://127.0.0.1:" .. h.tls_port
    h.tls_url_mismatch = "https://127.0.0.2:" .. h.tls_port
    h.tls_url_localhost = "https://localhost:" .. h.tls_port
    h.cafile = h.prefix .. "/ca.crt"
    h.other_cafile = h.prefix .. "/other-ca.crt"
    return h
end

local ENV_KEYS = { "url", "tls_url", "cafile", "pid", "prefix", "port", "tls_port",
    "tls_url_mismatch", "tls_url_localhost", "other_cafile" }

local function describe(h)
    local out = {}
    for _, k in ipairs(ENV_KEYS) do out[#out + 1] = k .. "=" .. tostring(h[k]) end
    return concat(out, "\n") .. "\n"
end

local function read_pid(prefix)
    return tonumber((read_file(prefix .. "/logs/nginx.pid") or ""):match("%d+"))
end

-------------------------------------------------------------------------------
-- public API

local function try_start(h, delay_ms, rate_limit)
    local dir = emulator_dir()
    local template = read_file(dir .. "/nginx.conf.in")
    if not template then error("cannot read " .. dir .. "/nginx.conf.in", 0) end
    local modules = os_getenv("DINGTALK_NGINX_MODULES_DIR")
    if not modules or modules == "" then modules = "/usr/lib/nginx/modules" end
    write_file(h.prefix .. "/conf/nginx.conf", render(template, {
        PREFIX = h.prefix, PORT = h.port, TLS_PORT = h.tls_port,
        EMULATOR_DIR = safe_path(dir, "emulator dir"),
        MODULES_DIR = safe_path(modules, "modules dir"),
        DELAY_MS = floor(tonumber(delay_ms) or 0),
        RATE_LIMIT = floor(tonumber(rate_limit) or 0),
    }))
    os.remove(h.prefix .. "/logs/nginx.pid")
    local errlog = h.prefix .. "/logs/error.log"
    local before = #(read_file(errlog) or "")
    local ok = run(q(nginx_bin()) .. " -p " .. q(h.prefix .. "/") .. " -c conf/nginx.conf"
        .. " -e logs/error.log </dev/null >>" .. q(h.prefix .. "/logs/stdout.log") .. " 2>&1")
    local function log_since()
        local s = (read_file(errlog) or ""):sub(before + 1)
        .. (read_file(h.prefix .. "/logs/stdout.log") or "")
        return s
    end
    if not ok then
        return false, log_since()
    end
    local deadline = socket.gettime() + START_TIMEOUT
    while true do
        h.pid = h.pid or read_pid(h.prefix)
        if h.pid and not alive(h.pid) then
            return false, log_since()
        end
        if h.pid and accepts("127.0.0.1", h.port) and accepts("127.0.0.1", h.tls_port)
            and accepts("127.0.0.2", h.tls_port) then
            local body = {}
            local _, code = http.request{ url = h.url .. "/__emulator/health",
                sink = ltn12.sink.table(body) }
            if code == 200 then return true end
        end
        if socket.gettime() > deadline then
            local pid = h.pid or read_pid(h.prefix)
            if pid then kill_nginx(pid) end
            error("emulator did not come up within " .. START_TIMEOUT .. " s; error.log:\n"
                .. tail(errlog, 20), 0)
        end
        sleep(0.02)
    end
end

function M.start(opts)
    opts = opts or {}
    local env_port = tonumber(os_getenv("DINGTALK_EMULATOR_PORT") or "")
    local want_plain = tonumber(opts.port) or env_port
    local want_tls = tonumber(opts.tls_port)

    local h = {}
    if opts.prefix then
        h.prefix = absolute(opts.prefix):gsub("/+$", "")
        if h.prefix == "" then error("bad prefix", 2) end
        local running = read_pid(h.prefix)
        if running and alive(running) and is_nginx(running) then
            error("an nginx (pid " .. running .. ") already runs in " .. h.prefix, 2)
        end
    else
        h.prefix = capture("mktemp -d -t dingtalk-emulator.XXXXXX"):gsub("%s+$", "")
        if h.prefix == "" then error("mktemp -d failed", 2) end
        h.created_prefix = true
    end
    safe_path(h.prefix, "prefix")
    if not run("mkdir -p " .. q(h.prefix .. "/conf") .. " " .. q(h.prefix .. "/logs")
        .. " " .. q(h.prefix .. "/temp")) then
        error("cannot create " .. h.prefix, 2)
    end
    -- the nginx worker (nobody) must traverse the prefix (temp files)
    run("chmod 755 " .. q(h.prefix))
    if h.created_prefix then write_file(h.prefix .. "/" .. MARKER, "") end

    local ok, err = pcall(function()
        make_certs(h.prefix)
        local attempts = (want_plain and want_tls) and 1 or 5
        for attempt = 1, attempts do
            h.port, h.tls_port = pick_ports(want_plain, want_tls)
            h.pid = nil
            handle_fields(h)
            local up, log = try_start(h, opts.delay_ms, opts.rate_limit)
            if up then return end
            if attempt == attempts or not log:find("Address already in use", 1, true) then
                error("nginx failed to start (ports " .. h.port .. ", " .. h.tls_port
                    .. "); error.log:\n" .. log, 0)
            end
        end
    end)
    if not ok then
        local pid = h.pid or read_pid(h.prefix)
        if pid then kill_nginx(pid) end
        if h.created_prefix then run("rm -rf " .. q(h.prefix)) end
        error(err, 2)
    end
    write_file(h.prefix .. "/emulator.env", describe(h))
    return h
end

function M.stop(h)
    if type(h) ~= "table" or not h.prefix then error("emulator.stop: handle expected", 2) end
    local pid = h.pid or read_pid(h.prefix)
    if pid then kill_nginx(pid) end
    local other = read_pid(h.prefix)
    if other and other ~= pid then kill_nginx(other) end
    local created = h.created_prefix or exists(h.prefix .. "/" .. MARKER)
    if created and h.prefix:match("^/.+/.") then
        run("rm -rf " .. q(h.prefix))
    end
    h.stopped = true
    return true
end

-- true while the handle's nginx master is running
function M.is_running(h)
    local pid = type(h) == "table" and h.pid or h
    return alive(pid)
end

-- A handle for an emulator started earlier (e.g. by the CLI) in prefix.
function M.attach(prefix)
    prefix = absolute(prefix):gsub("/+$", "")
    local env = read_file(prefix .. "/emulator.env")
    if not env then error("no emulator in " .. prefix .. " (no emulator.env)", 2) end
    local h = {}
    for k, v in env:gmatch("([%w_]+)=([^\n]*)") do h[k] = v end
    h.prefix = prefix
    h.pid = read_pid(prefix) or tonumber(h.pid)
    h.port, h.tls_port = tonumber(h.port), tonumber(h.tls_port)
    h.created_prefix = exists(prefix .. "/" .. MARKER)
    return handle_fields(h)
end

local function call(h, method, path, body)
    local out = {}
    local req = {
        url = h.url .. path, method = method, sink = ltn12.sink.table(out),
        create = function()
            local s = socket.tcp()
            s:settimeout(10)
            return s
        end,
    }
    if body then
        req.source = ltn12.source.string(body)
        req.headers = { ["content-type"] = "application/json",
            ["content-length"] = tostring(#body) }
    end
    local ok, code = http.request(req)
    if not ok then error("emulator " .. method .. " " .. path .. ": " .. tostring(code), 3) end
    if code ~= 200 then
        error("emulator " .. method .. " " .. path .. ": HTTP " .. tostring(code), 3)
    end
    return concat(out)
end

local function int(v)
    if type(v) == "number" and v == floor(v) then return floor(v) end
    return v
end

function M.requests(h)
    local list = cjson.decode(call(h, "GET", "/__emulator/requests")).requests
    for _, r in ipairs(list) do
        r.connection = int(r.connection)
        r.connection_requests = int(r.connection_requests)
        r.server_port = int(r.server_port)
    end
    return list
end

function M.reset(h)
    call(h, "DELETE", "/__emulator/requests")
    return true
end

function M.configure(h, cfg)
    local r = cjson.decode(call(h, "PUT", "/__emulator/config", cjson.encode(cfg or {})))
    r.delay_ms, r.rate_limit = int(r.delay_ms), int(r.rate_limit)
    return r
end
M.config = M.configure

function M.stats(h)
    local r = cjson.decode(call(h, "GET", "/__emulator/stats"))
    for k, v in pairs(r) do r[k] = int(v) end
    return r
end

-------------------------------------------------------------------------------
-- command line

local USAGE = [[
usage: control.lua start [--port N] [--tls-port N] [--prefix DIR] [--delay-ms N] [--rate-limit N]
       control.lua stop --prefix DIR
       control.lua requests --prefix DIR
       control.lua reset --prefix DIR
       control.lua stats --prefix DIR
       control.lua config --prefix DIR [--delay-ms N] [--rate-limit N]
]]

local function main(args)
    local cmd = args[1]
    local opts = {}
    local i = 2
    while args[i] do
        local k, v = args[i], args[i + 1]
        local name = k:match("^%-%-([%w-]+)$")
        if not name or v == nil then
            io.stderr:write(USAGE)
            return 2
        end
        opts[(name:gsub("-", "_"))] = v
        i = i + 2
    end
    local ok, err = pcall(function()
        if cmd == "start" then
            local h = M.start{ port = opts.port, tls_port = opts.tls_port,
                prefix = opts.prefix, delay_ms = opts.delay_ms, rate_limit = opts.rate_limit }
            io.stdout:write(describe(h))
        elseif cmd == "stop" or cmd == "requests" or cmd == "reset" or cmd == "stats"
            or cmd == "config" then
            if not opts.prefix then error("--prefix DIR is required", 0) end
            if cmd == "stop" then
                local prefix = absolute(opts.prefix):gsub("/+$", "")
                M.stop{ prefix = prefix, pid = read_pid(prefix) }
            elseif cmd == "requests" then
                io.stdout:write(call(M.attach(opts.prefix), "GET", "/__emulator/requests"), "\n")
            elseif cmd == "stats" then
                io.stdout:write(call(M.attach(opts.prefix), "GET", "/__emulator/stats"), "\n")
            elseif cmd == "config" then
                local cfg = { delay_ms = tonumber(opts.delay_ms), rate_limit = tonumber(opts.rate_limit) }
                io.stdout:write(cjson.encode(M.configure(M.attach(opts.prefix), cfg)), "\n")
            else
                M.reset(M.attach(opts.prefix))
            end
        else
            io.stderr:write(USAGE)
            error("unknown command: " .. tostring(cmd), 0)
        end
    end)
    if not ok then
        io.stderr:write("control.lua: ", tostring(err), "\n")
        return 1
    end
    return 0
end

local script = rawget(_G, "arg")
if type(script) == "table" and script[0] and SOURCE == "@" .. script[0] then
    os.exit(main(CHUNK_ARGS))
end

return M
