-- Local emulator of the DingTalk Open API, run inside nginx (lua-nginx-module).
--
-- Loaded by emulator/nginx.conf.in: init() in init_by_lua (master process),
-- handle() as the content handler of every location.
--
-- Routes live in the `routes` table below.  Each route is checked in the same
-- order the platform does: path -> method -> access token -> JSON body -> the
-- operation's own handler (which, for the emulator, is driven by magic values
-- such as robotCode = "fault-429").
--
-- Every non-control request is recorded in a shared dict so tests can assert
-- what the server actually received (see /__emulator/requests).

-- ngx.status, ngx.header and ngx.ctx are meant to be written
-- luacheck: globals ngx.status ngx.header ngx.ctx
local ngx = ngx
local cjson = require "cjson"

local pcall = pcall
local type = type
local pairs = pairs
local tonumber = tonumber
local concat = table.concat
local str_rep = string.rep
local str_sub = string.sub
local str_find = string.find
local str_match = string.match
local str_upper = string.upper
local str_format = string.format
local str_lower = string.lower
local math_max = math.max
local math_min = math.min
local math_floor = math.floor
local io_open = io.open

local _M = {}

local RECORDS_DICT = "dingtalk_emulator"
local META_DICT = "dingtalk_emulator_meta"
-- per-reset counting: rate windows, connections seen (flushed by a reset)
local STATS_DICT = "dingtalk_emulator_stats"
local MAX_RECORDS = 1000
local MAX_RECORDED_BODY = 1024 * 1024
local JSON_TYPE = "application/json;charset=utf-8"
local HTML_TYPE = "text/html;charset=utf-8"

-------------------------------------------------------------------------------
-- helpers

local function request_id()
    local id = ngx.ctx.emulator_request_id
    if id then return id end
    -- $request_id: 32 random hex digits (nginx >= 1.11), shaped like a uuid
    local hex = str_upper(ngx.var.request_id or "")
    if #hex < 32 then
        hex = str_format("%016X%016X", ngx.now() * 1000, ngx.worker.pid())
    end
    id = str_format("%s-%s-%s-%s-%s", str_sub(hex, 1, 8), str_sub(hex, 9, 12),
        str_sub(hex, 13, 16), str_sub(hex, 17, 20), str_sub(hex, 21, 32))
    ngx.ctx.emulator_request_id = id
    return id
end

-- Send a complete response with an exact body (Content-Length, no chunking).
local function send(status, content_type, body, headers)
    ngx.status = status
    if content_type then ngx.header["Content-Type"] = content_type end
    if headers then
        for k, v in pairs(headers) do ngx.header[k] = v end
    end
    ngx.header["Content-Length"] = #body
    if body ~= "" then ngx.print(body) end
    return ngx.exit(ngx.OK)
end

local function send_json(status, tbl, headers)
    return send(status, JSON_TYPE, cjson.encode(tbl), headers)
end

-- The platform's error shape: {"code","message","requestid"}.
local function send_error(status, code, message, extra, headers)
    local body = { code = code, message = message, requestid = request_id() }
    if extra then
        for k, v in pairs(extra) do body[k] = v end
    end
    return send_json(status, body, headers)
end

local function param_illegal()
    return send_error(400, "param.illegal", "Parameter error")
end

-- Write exact bytes on the raw downstream socket, then drop the connection.
local function send_raw_and_close(bytes)
    local sock, err = ngx.req.socket(true)
    if not sock then
        ngx.log(ngx.ERR, "emulator: raw socket: ", err)
        return ngx.exit(444)
    end
    sock:settimeout(5000)
    local ok
    ok, err = sock:send(bytes)
    if not ok then ngx.log(ngx.INFO, "emulator: raw send: ", err) end
    -- 444: nginx closes the connection without sending anything more
    return ngx.exit(444)
end

local function read_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then return body end
    local path = ngx.req.get_body_file()
    if not path then return "" end
    local f = io_open(path, "rb")
    if not f then return "" end
    body = f:read("*a") or ""
    f:close()
    return body
end

local function delay_ms()
    local meta = ngx.shared[META_DICT]
    return (meta and meta:get("delay_ms")) or 0
end

local function rate_limit()
    local meta = ngx.shared[META_DICT]
    return (meta and meta:get("rate_limit")) or 0
end

-------------------------------------------------------------------------------
-- load: requests in flight, connections, the per-second limit
--
-- The emulator runs in one nginx worker, so these counters see every
-- request. A request counts as in flight from the start of its content
-- handler (before the configured delay) until its log phase (_M.log), that
-- is until nginx is done with it, whatever way it ended.

local function count_in(path)
    local meta = ngx.shared[META_DICT]
    local stats = ngx.shared[STATS_DICT]
    local n = meta:incr("in_flight", 1, 0)
    ngx.ctx.emulator_in_flight = true
    if n > (meta:get("max_in_flight") or 0) then meta:set("max_in_flight", n) end
    meta:incr("requests", 1, 0)
    if str_sub(path, 1, 12) == "/v1.0/robot/" then meta:incr("robot_requests", 1, 0) end
    local conn = ngx.var.connection
    if stats:add("c:" .. conn, true) then meta:incr("connections", 1, 0) end
end

-- The per-app, per-API limit of the platform (rate-limits.md): at most
-- rate_limit requests per second per access token on /v1.0/robot/* routes,
-- counted at arrival in fixed windows of one second (whole seconds of the
-- emulator's clock). Every arrival counts, refused ones too (a client that
-- keeps hammering stays refused until the window ends). Returns true when
-- this request is over the limit.
local function over_rate(path)
    local limit = rate_limit()
    if limit <= 0 or str_sub(path, 1, 12) ~= "/v1.0/robot/" then return false end
    local token = ngx.req.get_headers()["x-acs-dingtalk-access-token"]
    if type(token) == "table" then token = token[1] end
    if type(token) ~= "string" or token == "" then return false end
    ngx.update_time()
    local window = math_floor(ngx.now())
    local n = ngx.shared[STATS_DICT]:incr("rl:" .. window .. ":" .. token, 1, 0, 5)
    return n ~= nil and n > limit
end

local function stats_json()
    local meta = ngx.shared[META_DICT]
    return {
        in_flight = meta:get("in_flight") or 0,
        max_in_flight = meta:get("max_in_flight") or 0,
        connections = meta:get("connections") or 0,
        requests = meta:get("requests") or 0,
        robot_requests = meta:get("robot_requests") or 0,
        refused = meta:get("refused") or 0,
    }
end

local function clear_stats()
    local meta = ngx.shared[META_DICT]
    ngx.shared[STATS_DICT]:flush_all()
    meta:set("max_in_flight", meta:get("in_flight") or 0)
    meta:set("connections", 0)
    meta:set("requests", 0)
    meta:set("robot_requests", 0)
    meta:set("refused", 0)
end

-------------------------------------------------------------------------------
-- recording

local function record(body)
    local records = ngx.shared[RECORDS_DICT]
    local meta = ngx.shared[META_DICT]
    local truncated = nil
    if #body > MAX_RECORDED_BODY then
        body = str_sub(body, 1, MAX_RECORDED_BODY)
        truncated = true
    end
    local entry = {
        method = ngx.req.get_method(),
        uri = ngx.var.request_uri,
        path = ngx.var.uri,
        headers = ngx.req.get_headers(200),
        body = body,
        body_truncated = truncated,
        connection = tonumber(ngx.var.connection),
        connection_requests = tonumber(ngx.var.connection_requests),
        scheme = ngx.var.scheme,
        server_addr = ngx.var.server_addr,
        server_port = tonumber(ngx.var.server_port),
        sni = ngx.var.ssl_server_name,
        http_version = ngx.req.http_version(),
        requestid = request_id(),
        time = ngx.now(),
    }
    local ok, json = pcall(cjson.encode, entry)
    if not ok then
        ngx.log(ngx.ERR, "emulator: cannot encode record: ", json)
        return
    end
    local n = meta:incr("seq", 1, 0)
    records:set("r:" .. n, json)
    if n > MAX_RECORDS then records:delete("r:" .. (n - MAX_RECORDS)) end
end

local function list_records()
    local records = ngx.shared[RECORDS_DICT]
    local meta = ngx.shared[META_DICT]
    local seq = meta:get("seq") or 0
    local first = math_max((meta:get("base") or 0) + 1, seq - MAX_RECORDS + 1)
    local out = {}
    for i = first, seq do
        local json = records:get("r:" .. i)
        if json then out[#out + 1] = json end
    end
    return '{"requests":[' .. concat(out, ",") .. "]}"
end

local function clear_records()
    local records = ngx.shared[RECORDS_DICT]
    local meta = ngx.shared[META_DICT]
    records:flush_all()
    meta:set("base", meta:get("seq") or 0)
end

-------------------------------------------------------------------------------
-- control routes (/__emulator/...): not recorded

local function control(path, method)
    ngx.header["x-acs-request-id"] = request_id()
    if path == "/__emulator/health" and method == "GET" then
        return send(200, "text/plain", "ok\n")
    elseif path == "/__emulator/requests" and method == "GET" then
        return send(200, JSON_TYPE, list_records())
    elseif path == "/__emulator/requests" and method == "DELETE" then
        clear_records()
        clear_stats()
        return send(200, JSON_TYPE, '{"ok":true}')
    elseif path == "/__emulator/stats" and method == "GET" then
        return send_json(200, stats_json())
    elseif path == "/__emulator/config" and method == "GET" then
        return send_json(200, { delay_ms = delay_ms(), rate_limit = rate_limit() })
    elseif path == "/__emulator/config" and (method == "PUT" or method == "POST") then
        local ok, cfg = pcall(cjson.decode, read_body())
        if not ok or type(cfg) ~= "table" then
            return send_json(400, { error = "expected a JSON object" })
        end
        local ms, limit = delay_ms(), rate_limit()
        if cfg.delay_ms ~= nil then
            ms = tonumber(cfg.delay_ms)
            if not ms or ms < 0 then return send_json(400, { error = "bad delay_ms" }) end
        end
        if cfg.rate_limit ~= nil then
            limit = tonumber(cfg.rate_limit)
            if not limit or limit < 0 or limit % 1 ~= 0 then
                return send_json(400, { error = "bad rate_limit (a whole number, 0 = none)" })
            end
        end
        ngx.shared[META_DICT]:set("delay_ms", ms)
        ngx.shared[META_DICT]:set("rate_limit", limit)
        return send_json(200, { delay_ms = ms, rate_limit = limit })
    end
    return send_error(404, "NotFound", "Not Found")
end

-------------------------------------------------------------------------------
-- fault scenarios of /v1.0/robot/plugins/clear, keyed by robotCode

local function status_line(code, reason)
    return "HTTP/1.1 " .. code .. " " .. reason .. "\r\n"
end

local BAD_GATEWAY_HTML = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    .. "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    .. "<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n"

local THROTTLED_HTML = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
    .. "<title>429 Too Many Requests</title></head>\n<body><h1>Too Many Requests</h1>"
    .. "<p>Your IP address has sent too many requests and has been temporarily throttled."
    .. " Please try again later.</p></body></html>\n"

local HUGE_SIZE = 2 * 1024 * 1024
local CHUNK_64K = str_rep("x", 64 * 1024)

local faults = {}

faults["dingbot-ok"] = function()
    return send(200, JSON_TYPE, '{"result":true}')
end

faults["dingbot-false"] = function()
    return send(200, JSON_TYPE, '{"result":false}')
end

faults["dingbot-other-app"] = function()
    return send_error(400, "invalidRequest.robotCodeNotMatch",
        "The app does not match the robotCode of the bound bot")
end

faults["dingbot-stopped"] = function()
    return send_error(400, "invalidRequest.robotIsStop",
        "The bot has been disabled by the organization")
end

faults["fault-system-error"] = function()
    return send_error(500, "system.error", "System error")
end

faults["fault-no-permission"] = function()
    return send_error(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied",
        "没有调用该接口的权限，接口权限申请参考：https://open.dingtalk.com/document/orgapp-server/add-api-permission",
        { accessdenieddetail = {
            requiredScopes = { "qyapi_robot_sendmsg" },
            accessCode = "Robot.SingleChat.ReadWrite",
        } })
end

faults["fault-qps-api"] = function()
    return send_error(403, "Forbidden.AccessDenied.QpsLimitForApi",
        "调用该接口超过了QPS限流，请降低调用频率")
end

faults["fault-qps-appkey"] = function()
    return send_error(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
        "当前应用调用该接口超过了QPS限流，请降低调用频率")
end

faults["fault-429"] = function()
    return send(429, HTML_TYPE, THROTTLED_HTML, { ["Retry-After"] = "1" })
end

faults["fault-html-502"] = function()
    return send(502, HTML_TYPE, BAD_GATEWAY_HTML)
end

faults["fault-not-json"] = function()
    return send(200, "text/plain", "OK")
end

faults["fault-empty"] = function()
    return send(200, JSON_TYPE, "")
end

faults["fault-no-result"] = function()
    return send(200, JSON_TYPE, '{"success":true}')
end

faults["fault-result-string"] = function()
    return send(200, JSON_TYPE, '{"result":"true"}')
end

faults["fault-array"] = function()
    return send(200, JSON_TYPE, "[true]")
end

faults["fault-nan"] = function()
    return send(200, JSON_TYPE, '{"result":NaN}')
end

faults["fault-capitalised"] = function()
    return send_json(400, {
        Code = "invalidRequest.robotNotExist",
        Message = "The bot does not exist. Verify and add it again",
        RequestId = request_id(),
    })
end

faults["fault-header-requestid"] = function()
    return send(400, JSON_TYPE, '{"code":"param.illegal","message":"Parameter error"}')
end

faults["fault-close-mid-body"] = function()
    return send_raw_and_close(status_line(200, "OK")
        .. "Content-Type: " .. JSON_TYPE .. "\r\n"
        .. "Content-Length: 100\r\n"
        .. "x-acs-request-id: " .. request_id() .. "\r\n"
        .. "\r\n"
        .. '{"resu')
end

faults["fault-truncated-chunked"] = function()
    return send_raw_and_close(status_line(200, "OK")
        .. "Content-Type: " .. JSON_TYPE .. "\r\n"
        .. "Transfer-Encoding: chunked\r\n"
        .. "x-acs-request-id: " .. request_id() .. "\r\n"
        .. "\r\n"
        .. "20\r\n"            -- announces 32 bytes ...
        .. '{"result":tr')      -- ... sends 12, then closes
end

faults["fault-huge"] = function()
    local head, tail = '{"result":true,"pad":"', '"}'
    return send(200, JSON_TYPE, head .. str_rep("x", HUGE_SIZE - #head - #tail) .. tail)
end

faults["fault-endless"] = function()
    ngx.status = 200
    ngx.header["Content-Type"] = JSON_TYPE
    local deadline = ngx.now() + 10
    local ok = ngx.print('{"result":true,"pad":"')
    while ok and ngx.now() < deadline do
        ok = ngx.print(CHUNK_64K)
        if ok then ok = ngx.flush(true) end
        -- at most ~64 MB/s: a client without a size cap fails, not the machine
        if ok then ngx.sleep(0.001) end
    end
    return ngx.exit(ngx.OK)
end

faults["fault-trickle"] = function()
    -- 50 bytes, one every 200 ms: a complete, valid answer after 10 s
    local body = str_rep(" ", 50 - 15) .. '{"result":true}'
    ngx.status = 200
    ngx.header["Content-Type"] = JSON_TYPE
    ngx.header["Content-Length"] = #body
    ngx.send_headers()
    ngx.flush(true)
    for i = 1, #body do
        if i > 1 then ngx.sleep(0.2) end
        local ok = ngx.print(str_sub(body, i, i))
        if ok then ok = ngx.flush(true) end
        if not ok then break end
    end
    return ngx.exit(ngx.OK)
end

faults["fault-invalid-utf8"] = function()
    -- built by hand: raw \xff\xfe bytes, and an escaped CR/LF that decodes to a real one
    return send(400, JSON_TYPE, '{"code":"param.illegal","message":"Parameter error \255\254'
        .. '\\r\\nX-Injected: 1\\r\\n","requestid":"' .. request_id() .. '"}')
end

faults["fault-deep-json"] = function()
    return send(200, JSON_TYPE, str_rep("[", 10000) .. str_rep("]", 10000))
end

faults["fault-redirect"] = function()
    return send(302, nil, "", { Location = "http://127.0.0.1:1/steal" })
end

faults["fault-echo-token"] = function(_, token)
    return send_error(400, "param.illegal", "bad token " .. token)
end

-------------------------------------------------------------------------------
-- hostile answers (issue 10): servers and proxies that echo secrets back,
-- malformed heads, odd numbers. Raw bytes where nginx would tidy them up.

-- "<pad of N bytes><secret> end": where the client's cut falls depends on N.
local function padded(n, secret)
    return str_rep("x", math_min(tonumber(n), 100000)) .. secret .. " end"
end

-- A platform error whose every text field echoes the secret after N bytes
-- of padding: message, requestid, a header request id, and nested
-- accessdenieddetail keys and values.
local function echo_everywhere(n, secret)
    local text = padded(n, secret)
    return send_error(400, "param.illegal", text, {
        requestid = text,
        accessdenieddetail = { [text] = text, list = { text, { deeper = text } } },
    }, { ["x-acs-trace-id"] = text })
end

-- The same echo as a proxy's HTML error page (an `http` error: excerpt and
-- inline excerpt), with the request id header echoing it too.
local function echo_html(n, secret)
    return send(502, HTML_TYPE, "<html><body>upstream said: " .. padded(n, secret)
        .. "</body></html>", { ["x-acs-request-id"] = padded(n, secret) })
end

-- Only the x-acs-request-id header echoes it (after a JSON error without
-- a body request id).
local function echo_request_id(n, secret)
    return send(400, JSON_TYPE, '{"code":"param.illegal","message":"Parameter error"}',
        { ["x-acs-request-id"] = padded(n, secret) })
end

local ECHO = { pad = echo_everywhere, html = echo_html, rid = echo_request_id }

-- "fault-echo-KIND-N" (robot calls: echoes the token) and
-- "app-echo-KIND-N" (the token call: echoes the app secret).
local function echo(code, secret)
    local kind, n = str_match(code, "^%a+%-echo%-(%a+)%-(%d+)$")
    if kind and ECHO[kind] then
        ECHO[kind](n, secret)
        return true
    end
    return false
end

local function raw_head(code, reason, headers, body)
    return send_raw_and_close(status_line(code, reason) .. concat(headers, "\r\n") .. "\r\n\r\n" .. body)
end

-- Response heads past every sane limit, and framings the client must refuse
-- the same way on both transports.
faults["fault-header-flood"] = function()
    local h = { "Content-Type: " .. JSON_TYPE, "Content-Length: 15" }
    for i = 1, 100000 do h[#h + 1] = "X-Flood-" .. i .. ": v" end
    return raw_head(200, "OK", h, '{"result":true}')
end

faults["fault-header-huge"] = function()
    return raw_head(200, "OK", { "Content-Type: " .. JSON_TYPE,
        "X-Huge: " .. str_rep("h", 10 * 1024 * 1024), "Content-Length: 15" }, '{"result":true}')
end

faults["fault-gzip-chunked"] = function()
    return raw_head(200, "OK", { "Content-Type: " .. JSON_TYPE,
        "Transfer-Encoding: gzip, chunked" }, "f\r\n{\"result\":true}\r\n0\r\n\r\n")
end

faults["fault-101"] = function()
    return raw_head(101, "Switching Protocols",
        { "Upgrade: websocket", "Connection: Upgrade" }, '{"result":true}')
end

faults["fault-huge-length"] = function()
    return raw_head(200, "OK", { "Content-Type: " .. JSON_TYPE,
        "Content-Length: 10000000000" }, '{"result":true}')
end

faults["fault-bad-length"] = function()
    return raw_head(200, "OK", { "Content-Type: " .. JSON_TYPE,
        "Content-Length: 99999999999999999999999" }, '{"result":true}')
end

faults["fault-retry-after-huge"] = function()
    return send(429, HTML_TYPE, THROTTLED_HTML, { ["Retry-After"] = "100000000000000000000000" })
end

-- A redirect whose body looks like a platform error: still an `http` error.
faults["fault-3xx-json"] = function()
    return send(302, JSON_TYPE, '{"code":"param.illegal","message":"moved"}',
        { Location = "http://127.0.0.1:1/elsewhere" })
end

-- Unicode controls that reorder or break a log line: C1 (NEL U+0085, CSI
-- U+009B), LINE/PARAGRAPH SEPARATOR (U+2028/9), bidi overrides (U+202E,
-- U+2066).
faults["fault-unicode-controls"] = function()
    return send(400, JSON_TYPE, '{"code":"param.illegal","message":"a\194\133b\194\155c'
        .. '\226\128\168d\226\128\169e\226\128\174f\226\129\166g","requestid":"rid-1"}')
end

-- Numbers where the platform usually sends strings.
faults["fault-numeric-code"] = function()
    return send(400, JSON_TYPE, '{"code":40014,"message":"invalid access_token","requestid":12345}')
end

-- The platform's limits (shared/api/rate-limits.md): the monthly quota,
-- which no retry can help, and the per-IP block, which is not a platform
-- error at all but a bare JSON verdict.
faults["fault-quota"] = function()
    return send_error(403, "Forbidden.AccessDenied.ApiCountLimitForOrg",
        "企业调用该接口的次数已超过本月限额")
end

faults["fault-ip-block"] = function()
    return send(403, JSON_TYPE, '{"status":1111,"wait":5,"source":"x5","punish":"deny","uuid":"'
        .. request_id() .. '"}')
end

-- A kept-alive connection the server ends after a complete answer: once
-- announced (Connection: close), once silently (as an idle timeout would).
local OK_HEAD = status_line(200, "OK") .. "Content-Type: " .. JSON_TYPE .. "\r\n"
    .. "Content-Length: 15\r\n"

faults["dingbot-ok-close"] = function()
    return send_raw_and_close(OK_HEAD .. "Connection: close\r\n"
        .. "x-acs-request-id: " .. request_id() .. "\r\n\r\n" .. '{"result":true}')
end

faults["dingbot-ok-drop"] = function()
    return send_raw_and_close(OK_HEAD .. "x-acs-request-id: " .. request_id()
        .. "\r\n\r\n" .. '{"result":true}')
end

-- Flaky operations, for retries: robotCode (or appKey) "flaky-KIND-N-TAG"
-- fails the first N requests of that route and code with KIND, then
-- succeeds. Use a fresh TAG per test: the counts live until nginx stops.
local FLAKY = {
    ["500"] = function() return send_error(500, "system.error", "System error") end,
    ["502"] = function() return send(502, HTML_TYPE, BAD_GATEWAY_HTML) end,
    ["429"] = function() return send(429, HTML_TYPE, THROTTLED_HTML, { ["Retry-After"] = "2" }) end,
    ["throttle"] = function() return send(429, HTML_TYPE, THROTTLED_HTML) end,
    ["qps"] = function()
        return send_error(403, "Forbidden.AccessDenied.QpsLimitForApi", "调用该接口超过了QPS限流，请降低调用频率")
    end,
    ["drop"] = function() return send_raw_and_close("") end,
    -- the per-IP block verdict with a block of 0.02 minutes (1.2 s), so a
    -- spec can see the batch pause and go on
    ["ipblock"] = function()
        return send(403, JSON_TYPE, '{"status":1111,"wait":0.02,"source":"x5","punish":"deny","uuid":"'
            .. request_id() .. '"}')
    end,
    ["slow"] = function()
        ngx.sleep(1)
        return send(200, JSON_TYPE, '{"result":true}')
    end,
    ["400"] = function() return param_illegal() end,
}

-- Returns true when it answered (a failure); false: go on and succeed.
local function flaky(code)
    local kind, n = str_match(code or "", "^flaky%-(%w+)%-(%d+)%-")
    if not kind or not FLAKY[kind] then return nil end
    local seen = ngx.shared[META_DICT]:incr("flaky:" .. ngx.var.uri .. ":" .. code, 1, 0)
    if seen <= tonumber(n) then
        FLAKY[kind]()
        return true
    end
    return false
end

-- Quick entries per bot for query/set: "dingbot-ok" always has the default
-- two; "dingbot-plugins-*" bots keep what set stored (clear empties them).
local DEFAULT_PLUGINS = '[{"name":"Help","icon":"@lALPDfJ6help","pcUrl":"https://example.com/help",'
    .. '"mobileUrl":"https://example.com/m/help"},{"name":"Orders","icon":"@lALPDfJ6orders",'
    .. '"pcUrl":"https://example.com/orders","mobileUrl":"https://example.com/m/orders"}]'

local function plugin_bot(code)
    return code == "dingbot-ok" or str_find(code, "^dingbot%-plugins") ~= nil
end

-- The error answers that clear has, for query and set too.
local function shared_fault(code)
    if code == "dingbot-other-app" or code == "dingbot-stopped"
        or str_sub(code, 1, 6) == "fault-" then
        return faults[code]
    end
    return nil
end

local function not_exist()
    return send_error(400, "invalidRequest.robotNotExist",
        "The bot does not exist. Verify and add it again")
end

local function clear_plugins(args, token)
    local code = args.robotCode
    local fault = faults[code]
    if fault then return fault(args, token) end
    if echo(code, token) then return end
    local ms = str_match(code, "^fault%-slow%-(%d+)$")
    if ms then
        ngx.sleep(math_min(tonumber(ms), 120000) / 1000)
        return send(200, JSON_TYPE, '{"result":true}')
    end
    local failed = flaky(code)
    if failed then return end
    if failed == false then return send(200, JSON_TYPE, '{"result":true}') end
    if plugin_bot(code) then
        ngx.shared[META_DICT]:set("plugins:" .. code, "[]")
        return send(200, JSON_TYPE, '{"result":true}')
    end
    return not_exist()
end

local function query_plugins(args, token)
    local code = args.robotCode
    local fault = shared_fault(code)
    if fault then return fault(args, token) end
    local failed = flaky(code)
    if failed then return end
    if failed == false or plugin_bot(code) then
        local stored = code ~= "dingbot-ok" and ngx.shared[META_DICT]:get("plugins:" .. code)
        return send(200, JSON_TYPE, '{"pluginInfoList":' .. (stored or DEFAULT_PLUGINS) .. "}")
    end
    if code == "dingbot-plugin-nulls" then
        return send(200, JSON_TYPE, '{"pluginInfoList":[{"name":"N","icon":"i","pcUrl":null}]}')
    end
    return not_exist()
end

local PLUGIN_FIELDS = { name = true, icon = true, pcUrl = false, mobileUrl = false }

local function set_plugins(args, token)
    local list = args.pluginInfoList
    if #list == 0 then return param_illegal() end
    for k, e in pairs(list) do
        if type(k) ~= "number" or type(e) ~= "table" then return param_illegal() end
        for f, v in pairs(e) do
            if PLUGIN_FIELDS[f] == nil or type(v) ~= "string" then return param_illegal() end
        end
        for f, required in pairs(PLUGIN_FIELDS) do
            if required and (e[f] == nil or e[f] == "") then return param_illegal() end
        end
    end
    local code = args.robotCode
    local fault = shared_fault(code)
    if fault then return fault(args, token) end
    local failed = flaky(code)
    if failed then return end
    if failed == false or plugin_bot(code) then
        if code ~= "dingbot-ok" then
            ngx.shared[META_DICT]:set("plugins:" .. code, cjson.encode(list))
        end
        return send(200, JSON_TYPE, '{"result":true}')
    end
    return not_exist()
end

-- POST /v1.0/oauth2/accessToken. Magic app keys:
--   bad-* (or a secret bad-*): invalidClientIdOrSecret;  app-echo-secret: the
--   same, with the secret in the message;  app-expire-N: expireIn N;
--   app-expire-none: no expireIn;  app-no-token: no accessToken;
--   app-revoke-first: the first token issued is refused by every API;
--   app-always-invalid: every token is refused;  flaky-KIND-N-TAG: as above;
--   app-revoke-numeric: the first token is refused with the old numeric code
--   40014;  app-echo-KIND-N: the secret echoed after N bytes (see echo());
--   app-echo-body: a 400 page showing the request body.
-- Tokens are "at-<appKey>-<n>" (n counts the tokens issued for that key).
local function access_token(args)
    local key, secret = args.appKey, args.appSecret
    if str_sub(key, 1, 4) == "bad-" or str_sub(secret, 1, 4) == "bad-" then
        return send_error(400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
    end
    if key == "app-echo-secret" then
        return send_error(400, "invalidClientIdOrSecret", "no app matches appSecret " .. secret)
    end
    if echo(key, secret) then return end
    -- a proxy page that shows the whole request body back (JSON-escaped secret)
    -- (read_body: a body nginx kept in a file has no get_body_data)
    if key == "app-echo-body" then return send(400, HTML_TYPE, "<pre>" .. read_body() .. "</pre>") end
    if flaky(key) then return end
    if key == "app-no-token" then return send(200, JSON_TYPE, '{"expireIn":7200}') end
    local n = ngx.shared[META_DICT]:incr("tokens:" .. key, 1, 0)
    local tok = "at-" .. key .. "-" .. n
    if key == "app-always-invalid" or (key == "app-revoke-first" and n == 1) then
        tok = "invalid-" .. tok
    elseif key == "app-revoke-numeric" and n == 1 then
        tok = "numeric-invalid-" .. tok
    end
    local ttl = 7200
    local given = str_match(key, "^app%-expire%-(%w+)$")
    if given == "none" then ttl = nil elseif given then ttl = tonumber(given) end
    return send_json(200, { accessToken = tok, expireIn = ttl })
end

-------------------------------------------------------------------------------
-- routes: path -> { method, auth (needs the token header), body schema, handler }

local routes = {
    ["/v1.0/robot/plugins/clear"] = {
        method = "POST",
        auth = true,
        body = { robotCode = "string" },
        handler = clear_plugins,
    },
    ["/v1.0/robot/plugins/query"] = {
        method = "POST",
        auth = true,
        body = { robotCode = "string" },
        handler = query_plugins,
    },
    ["/v1.0/robot/plugins/set"] = {
        method = "POST",
        auth = true,
        body = { robotCode = "string", pluginInfoList = "table" },
        handler = set_plugins,
    },
    ["/v1.0/oauth2/accessToken"] = {
        method = "POST",
        auth = false,
        body = { appKey = "string", appSecret = "string" },
        handler = access_token,
    },
}
_M.routes = routes
_M.faults = faults

local function check_token()
    local token = ngx.req.get_headers()["x-acs-dingtalk-access-token"]
    if type(token) == "table" then token = token[1] end
    if type(token) ~= "string" or token == ""
        or token == "expired-token" or str_sub(token, 1, 7) == "invalid" then
        return nil
    end
    return token
end

local function is_json_content_type()
    local ct = ngx.var.content_type
    if not ct then return false end
    ct = str_lower(str_match(ct, "^%s*([^;]*)") or "")
    ct = str_match(ct, "^(.-)%s*$")
    return ct == "application/json"
end

-- Parses the body and checks it against the route's schema: exactly the
-- fields listed, each of the given type.
local function check_body(raw, schema)
    if not str_find(raw, "^%s*{") then return nil end
    local ok, args = pcall(cjson.decode, raw)
    if not ok or type(args) ~= "table" then return nil end
    for k, v in pairs(args) do
        if schema[k] == nil or type(v) ~= schema[k] then return nil end
    end
    for k in pairs(schema) do
        if args[k] == nil or args[k] == "" then return nil end
    end
    return args
end

-------------------------------------------------------------------------------
-- entry points

function _M.init(opts)
    opts = opts or {}
    local meta = ngx.shared[META_DICT]
    if meta then
        meta:set("delay_ms", tonumber(opts.delay_ms) or 0)
        meta:set("rate_limit", tonumber(opts.rate_limit) or 0)
    end
end

-- log phase of every request: the end of an API request's time in flight
function _M.log()
    if ngx.ctx.emulator_in_flight then
        ngx.ctx.emulator_in_flight = nil
        ngx.shared[META_DICT]:incr("in_flight", -1, 0)
    end
end

function _M.handle()
    local path = ngx.var.uri
    local method = ngx.req.get_method()
    if str_sub(path, 1, 12) == "/__emulator/" then
        return control(path, method)
    end

    count_in(path)
    local refused = over_rate(path)
    local raw = read_body()
    record(raw)
    ngx.header["x-acs-request-id"] = request_id()

    local delay = delay_ms()
    if delay > 0 then ngx.sleep(delay / 1000) end

    local route = routes[path]
    if not route then
        return send_error(404, "NotFound", "Not Found")
    end
    if method ~= route.method then
        return send_error(405, "MethodNotAllowed", "Method Not Allowed",
            nil, { Allow = route.method })
    end
    local token
    if route.auth then
        token = check_token()
        if not token then
            return send_error(400, "InvalidAuthentication", "不合法的access_token")
        end
        if str_sub(token, 1, 15) == "numeric-invalid" then
            return send_error(400, 40014, "invalid access_token")
        end
    end
    if refused then
        ngx.shared[META_DICT]:incr("refused", 1, 0)
        return send_error(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "调用该接口超过了应用的QPS限流，请降低调用频率")
    end
    local args = {}
    if route.body then
        if not is_json_content_type() then return param_illegal() end
        args = check_body(raw, route.body)
        if not args then return param_illegal() end
    end
    return route.handler(args, token)
end

_M.version = "0.1.0"

return _M
