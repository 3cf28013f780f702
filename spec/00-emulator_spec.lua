-- Specs of the bundled DingTalk Open API emulator (emulator/), not of the module.
-- Run from the repo root: lua5.4 /usr/bin/busted spec/00-emulator_spec.lua

local emulator = require "spec.helpers.emulator"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local PATH = "/v1.0/robot/plugins/clear"
local TOKEN = "test-token"
local REQUEST_ID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function lua_interpreter()
    local i = -1
    while arg and arg[i - 1] do i = i - 1 end
    return (arg and arg[i]) or "lua5.4"
end

local shell = require "spec.helpers.shell"
local sh, q = shell.sh, shell.q

local main_prefix -- of the emulator shared by the first describe

local function nginx_left(prefix)
    -- "[n]ginx": the pattern must not match the shell running pgrep itself
    local rc = sh("pgrep -f " .. q("[n]ginx -p " .. prefix .. "/"))
    return rc == 0
end

describe("emulator", function()
    local h

    -- POST helper on the plain server; opts: token (false = none), body,
    -- content_type, method, path, headers
    local function call(opts)
        opts = opts or {}
        local body = opts.body or cjson.encode{ robotCode = opts.code }
        local headers = {
            ["content-type"] = opts.content_type or "application/json",
            ["content-length"] = tostring(#body),
            ["x-acs-dingtalk-access-token"] = TOKEN,
        }
        if opts.token == false then
            headers["x-acs-dingtalk-access-token"] = nil
        elseif opts.token then
            headers["x-acs-dingtalk-access-token"] = opts.token
        end
        local out = {}
        local ok, status, hdrs = http.request{
            url = (opts.base or h.url) .. (opts.path or PATH),
            method = opts.method or "POST",
            headers = headers,
            source = ltn12.source.string(body),
            sink = ltn12.sink.table(out),
            redirect = false,
        }
        assert(ok, status)
        return status, hdrs, table.concat(out)
    end

    local function post(code, opts)
        opts = opts or {}
        opts.code = code
        return call(opts)
    end

    local function raw_request(body_code, extra_headers)
        local body = cjson.encode{ robotCode = body_code }
        return "POST " .. PATH .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            .. "Content-Type: application/json\r\n"
            .. "x-acs-dingtalk-access-token: " .. TOKEN .. "\r\n"
            .. (extra_headers or "")
            .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
    end

    local function connect()
        local sock = assert(socket.tcp())
        sock:settimeout(3)
        assert(sock:connect("127.0.0.1", h.port))
        return sock
    end

    -- reads one Content-Length response from a keep-alive socket
    local function read_response(sock)
        local status = assert(sock:receive("*l"))
        local headers = {}
        while true do
            local line = assert(sock:receive("*l"))
            if line == "" then break end
            local k, v = line:match("^([^:]+):%s*(.*)$")
            headers[k:lower()] = v
        end
        local body = assert(sock:receive(tonumber(headers["content-length"])))
        return status, headers, body
    end

    local function curl(args)
        return sh("curl -sS --noproxy '*' --max-time 5 " .. args)
    end

    local function curl_post(base, code, extra)
        return curl((extra or "") .. " -X POST -H 'content-type: application/json'"
            .. " -H 'x-acs-dingtalk-access-token: " .. TOKEN .. "'"
            .. " -d '{\"robotCode\":\"" .. code .. "\"}' " .. q(base .. PATH))
    end

    setup(function()
        h = emulator.start()
        main_prefix = h.prefix
    end)

    teardown(function()
        if h then emulator.stop(h) end
    end)

    before_each(function()
        emulator.reset(h)
    end)

    describe("start", function()
        it("returns a handle with urls, CA files and the master pid", function()
            assert.matches("^http://127%.0%.0%.1:%d+$", h.url)
            assert.equal("https://127.0.0.1:" .. h.tls_port, h.tls_url)
            assert.equal("https://127.0.0.2:" .. h.tls_port, h.tls_url_mismatch)
            assert.equal("https://localhost:" .. h.tls_port, h.tls_url_localhost)
            assert.equal(h.prefix .. "/ca.crt", h.cafile)
            assert.equal(h.prefix .. "/other-ca.crt", h.other_cafile)
            assert.truthy(io.open(h.cafile))
            assert.truthy(io.open(h.other_cafile))
            assert.is_number(h.pid)
            assert.is_true(emulator.is_running(h))
        end)

        it("answers the health route", function()
            local body, status = http.request(h.url .. "/__emulator/health")
            assert.equal(200, status)
            assert.equal("ok\n", body)
        end)
    end)

    describe("POST /v1.0/robot/plugins/clear", function()
        it("answers dingbot-ok with {result:true}, a request id and JSON type", function()
            local status, headers, body = post("dingbot-ok")
            assert.equal(200, status)
            assert.same({ result = true }, cjson.decode(body))
            assert.equal("application/json;charset=utf-8", headers["content-type"])
            assert.matches(REQUEST_ID, headers["x-acs-request-id"])
            local _, headers2 = post("dingbot-ok")
            assert.not_equal(headers["x-acs-request-id"], headers2["x-acs-request-id"])
        end)

        it("answers dingbot-false with {result:false}", function()
            local status, _, body = post("dingbot-false")
            assert.equal(200, status)
            assert.same({ result = false }, cjson.decode(body))
        end)

        it("rejects missing, expired and invalid tokens", function()
            for _, token in ipairs{ false, "expired-token", "invalid-abc" } do
                local status, headers, body = post("dingbot-ok", { token = token })
                assert.equal(400, status)
                local err = cjson.decode(body)
                assert.equal("InvalidAuthentication", err.code)
                assert.equal("不合法的access_token", err.message)
                assert.equal(headers["x-acs-request-id"], err.requestid)
            end
        end)

        it("answers param.illegal for a bad content type or body", function()
            local cases = {
                { content_type = "text/plain" },
                { body = '{"robotCode":"dingbot-ok","extra":1}' },
                { body = '{"robotCode":1}' },
                { body = '["dingbot-ok"]' },
                { body = "{}" },
                { body = "not json" },
                { body = "" },
            }
            for _, opts in ipairs(cases) do
                opts.code = "dingbot-ok"
                local status, _, body = call(opts)
                assert.equal(400, status)
                assert.equal("param.illegal", cjson.decode(body).code)
            end
            local status = post("dingbot-ok", { content_type = "application/json; charset=UTF-8" })
            assert.equal(200, status)
        end)

        it("answers the documented and global error codes", function()
            local cases = {
                ["dingbot-other-app"] = { 400, "invalidRequest.robotCodeNotMatch",
                    "The app does not match the robotCode of the bound bot" },
                ["dingbot-stopped"] = { 400, "invalidRequest.robotIsStop",
                    "The bot has been disabled by the organization" },
                ["no-such-bot"] = { 400, "invalidRequest.robotNotExist",
                    "The bot does not exist. Verify and add it again" },
                ["fault-system-error"] = { 500, "system.error", "System error" },
                ["fault-qps-api"] = { 403, "Forbidden.AccessDenied.QpsLimitForApi" },
                ["fault-qps-appkey"] = { 403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" },
            }
            for code, want in pairs(cases) do
                local status, headers, body = post(code)
                assert.equal(want[1], status)
                local err = cjson.decode(body)
                assert.equal(want[2], err.code)
                if want[3] then assert.equal(want[3], err.message) end
                assert.equal(headers["x-acs-request-id"], err.requestid)
            end
        end)

        it("answers a permission error with accessdenieddetail", function()
            local status, _, body = post("fault-no-permission")
            assert.equal(403, status)
            local err = cjson.decode(body)
            assert.equal("Forbidden.AccessDenied.AccessTokenPermissionDenied", err.code)
            assert.equal("Robot.SingleChat.ReadWrite", err.accessdenieddetail.accessCode)
            assert.same({ "qyapi_robot_sendmsg" }, err.accessdenieddetail.requiredScopes)
        end)

        it("answers 404 for unknown paths and 405 for other methods", function()
            local status, _, body = post("dingbot-ok", { path = "/v1.0/robot/nope" })
            assert.equal(404, status)
            assert.equal("NotFound", cjson.decode(body).code)
            status, _, body = post("dingbot-ok", { method = "PUT" })
            assert.equal(405, status)
            assert.equal("MethodNotAllowed", cjson.decode(body).code)
        end)

        it("answers odd but well-formed responses", function()
            local _
            local status, headers, body = post("fault-429")
            assert.equal(429, status)
            assert.equal("1", headers["retry-after"])
            assert.matches("^text/html", headers["content-type"])
            assert.matches("Too Many Requests", body)

            status, headers, body = post("fault-html-502")
            assert.equal(502, status)
            assert.matches("^text/html", headers["content-type"])
            assert.matches("<title>502 Bad Gateway</title>", body, 1, true)

            status, headers, body = post("fault-not-json")
            assert.same({ 200, "text/plain", "OK" }, { status, headers["content-type"], body })

            status, headers, body = post("fault-empty")
            assert.same({ 200, "0", "" }, { status, headers["content-length"], body })

            for code, want in pairs{ ["fault-no-result"] = '{"success":true}',
                ["fault-result-string"] = '{"result":"true"}', ["fault-array"] = "[true]",
                ["fault-nan"] = '{"result":NaN}' } do
                status, _, body = post(code)
                assert.same({ 200, want }, { status, body })
            end

            status, _, body = post("fault-deep-json")
            assert.equal(200, status)
            assert.equal(string.rep("[", 10000) .. string.rep("]", 10000), body)

            status, headers, body = post("fault-redirect")
            assert.equal(302, status)
            assert.equal("http://127.0.0.1:1/steal", headers["location"])
            assert.equal("", body)
        end)

        it("answers hostile error bodies", function()
            local _
            local status, headers, body = post("fault-capitalised")
            assert.equal(400, status)
            local err = cjson.decode(body)
            assert.equal("invalidRequest.robotNotExist", err.Code)
            assert.equal(headers["x-acs-request-id"], err.RequestId)
            assert.is_nil(err.code)

            status, headers, body = post("fault-header-requestid")
            assert.equal(400, status)
            assert.same({ code = "param.illegal", message = "Parameter error" }, cjson.decode(body))
            assert.matches(REQUEST_ID, headers["x-acs-request-id"])

            status, _, body = post("fault-echo-token", { token = "s3cr3t-token" })
            assert.equal(400, status)
            assert.equal("bad token s3cr3t-token", cjson.decode(body).message)

            status, _, body = post("fault-invalid-utf8")
            assert.equal(400, status)
            assert.truthy(body:find("\255\254", 1, true))
            assert.truthy(cjson.decode(body).message:find("\r\n", 1, true))
        end)

        it("answers odd numbers, a 3xx with a JSON body and Unicode controls", function()
            local _, body
            local status, headers = post("fault-retry-after-huge")
            assert.equal(429, status)
            assert.equal("100000000000000000000000", headers["retry-after"])

            status, headers, body = post("fault-3xx-json")
            assert.equal(302, status)
            assert.equal("http://127.0.0.1:1/elsewhere", headers["location"])
            assert.same({ code = "param.illegal", message = "moved" }, cjson.decode(body))

            status, _, body = post("fault-unicode-controls")
            assert.equal(400, status)
            assert.equal("a\194\133b\194\155c\226\128\168d\226\128\169e\226\128\174f\226\129\166g",
                         cjson.decode(body).message)

            status, _, body = post("fault-numeric-code")
            assert.equal(400, status)
            -- numbers in the JSON text itself, not strings
            assert.matches('"code":40014[,}]', body)
            assert.matches('"requestid":12345[,}]', body)
        end)

        -- "x" * N, the secret, " end": where the client's cuts fall depends on N
        it("echoes the token after N bytes of padding (fault-echo-KIND-N)", function()
            local secret = "echo-Tk7w-0123456789"
            local want = ("x"):rep(150) .. secret .. " end"
            local status, headers, body = post("fault-echo-pad-150", { token = secret })
            assert.equal(400, status)
            local e = cjson.decode(body)
            assert.same({ "param.illegal", want, want }, { e.code, e.message, e.requestid })
            assert.equal(want, headers["x-acs-trace-id"])
            assert.same({ [want] = want, list = { want, { deeper = want } } }, e.accessdenieddetail)

            status, headers, body = post("fault-echo-html-150", { token = secret })
            assert.equal(502, status)
            assert.matches("^text/html", headers["content-type"])
            assert.equal("<html><body>upstream said: " .. want .. "</body></html>", body)
            assert.equal(want, headers["x-acs-request-id"])

            status, headers, body = post("fault-echo-rid-150", { token = secret })
            assert.equal(400, status)
            assert.same({ code = "param.illegal", message = "Parameter error" }, cjson.decode(body))
            assert.equal(want, headers["x-acs-request-id"])

            -- the padding is capped (100,000 bytes)
            status, headers = post("fault-echo-rid-999999", { token = secret })
            assert.equal(400, status)
            assert.equal(100000 + #secret + 4, #headers["x-acs-request-id"])
        end)

        it("echoes the app secret on the token route (app-echo-*)", function()
            local secret = "app-Sc9q-0123456789"
            local function token_call(key)
                return call{ path = "/v1.0/oauth2/accessToken", token = false,
                             body = cjson.encode{ appKey = key, appSecret = secret } }
            end
            local want = ("x"):rep(20) .. secret .. " end"
            local _
            local status, headers, body = token_call("app-echo-pad-20")
            assert.equal(400, status)
            assert.equal(want, cjson.decode(body).message)
            assert.equal(want, headers["x-acs-trace-id"])
            status, headers = token_call("app-echo-rid-20")
            assert.equal(400, status)
            assert.equal(want, headers["x-acs-request-id"])
            status, _, body = token_call("app-echo-html-20")
            assert.equal(502, status)
            assert.truthy(body:find(want, 1, true))
            status, _, body = token_call("app-echo-body")
            assert.equal(400, status)
            assert.equal("<pre>" .. cjson.encode{ appKey = "app-echo-body", appSecret = secret } .. "</pre>",
                         body)
        end)

        it("refuses the first token of app-revoke-numeric with a numeric code", function()
            local function token_call()
                local _, _, body = call{ path = "/v1.0/oauth2/accessToken", token = false,
                    body = cjson.encode{ appKey = "app-revoke-numeric", appSecret = "s" } }
                return cjson.decode(body).accessToken
            end
            local first, second = token_call(), token_call()
            local _
            local status, body
            status, _, body = post("dingbot-ok", { token = first })
            assert.equal(400, status)
            assert.matches('"code":40014[,}]', body)
            status, _, body = post("dingbot-ok", { token = second })
            assert.same({ 200, { result = true } }, { status, cjson.decode(body) })
        end)

        it("sends a valid 2 MiB body for fault-huge", function()
            local status, headers, body = post("fault-huge")
            assert.equal(200, status)
            assert.equal(2 * 1024 * 1024, #body)
            assert.equal(tostring(#body), headers["content-length"])
            assert.is_true(cjson.decode(body).result)
        end)

        it("sleeps for fault-slow-<ms>", function()
            local t0 = socket.gettime()
            local status, _, body = post("fault-slow-300")
            assert.equal(200, status)
            assert.equal('{"result":true}', body)
            assert.is_true(socket.gettime() - t0 >= 0.29)
        end)

        it("adds the configured delay to every API request", function()
            assert.same({ delay_ms = 200, rate_limit = 0 }, emulator.configure(h, { delay_ms = 200 }))
            local t0 = socket.gettime()
            local status = post("dingbot-ok")
            local elapsed = socket.gettime() - t0
            emulator.configure(h, { delay_ms = 0 })
            assert.equal(200, status)
            assert.is_true(elapsed >= 0.19)
        end)
    end)

    describe("load: rate_limit and stats", function()
        after_each(function()
            emulator.config(h, { delay_ms = 0, rate_limit = 0 })
        end)

        -- waits for the start of a second of the clock the emulator reads
        local function next_second()
            local now = socket.gettime()
            socket.sleep(math.floor(now) + 1.02 - now)
        end

        it("refuses what goes over rate_limit per token and second, as the platform does", function()
            assert.same({ delay_ms = 0, rate_limit = 5 }, emulator.config(h, { rate_limit = 5 }))
            next_second()
            local got = {}
            for i = 1, 8 do
                local status, hdrs, body = post("dingbot-ok", { token = "tok-rl-a" })
                got[i] = { status = status, body = cjson.decode(body), rid = hdrs["x-acs-request-id"] }
            end
            -- another token (app) has its own budget; the token route none
            local other = post("dingbot-ok", { token = "tok-rl-b" })
            local tok = call{ path = "/v1.0/oauth2/accessToken", token = false,
                body = cjson.encode{ appKey = "app-rl", appSecret = "s" } }
            assert.is_true(socket.gettime() % 1 < 0.9, "the burst did not fit in one second")
            for i = 1, 5 do
                assert.equal(200, got[i].status)
                assert.same({ result = true }, got[i].body)
            end
            for i = 6, 8 do
                assert.equal(403, got[i].status)
                assert.equal("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", got[i].body.code)
                assert.is_string(got[i].body.message)
                assert.matches(REQUEST_ID, got[i].body.requestid)
                assert.equal(got[i].body.requestid, got[i].rid)
            end
            assert.equal(200, other)
            assert.equal(200, tok)
            local st = emulator.stats(h)
            assert.same({ 3, 9, 10 }, { st.refused, st.robot_requests, st.requests })
            -- the next second has a fresh budget
            next_second()
            assert.equal(200, (post("dingbot-ok", { token = "tok-rl-a" })))
            assert.same({ delay_ms = 0, rate_limit = 5 }, cjson.decode(select(3, call{
                path = "/__emulator/config", method = "GET", body = "" })))
            -- a bad value is refused, the old one kept
            local status = call{ path = "/__emulator/config", method = "PUT",
                body = '{"rate_limit":-1}' }
            assert.equal(400, status)
            assert.same({ delay_ms = 0, rate_limit = 5 }, emulator.config(h, {}))
        end)

        it("counts requests in flight, the most at once and the connections, until a reset", function()
            emulator.config(h, { delay_ms = 400 })
            local socks = {}
            for i = 1, 5 do
                socks[i] = connect()
                socks[i]:send(raw_request("dingbot-ok"))
            end
            socket.sleep(0.2)
            local during = emulator.stats(h)
            for i = 1, 5 do
                local status = read_response(socks[i])
                assert.equal("HTTP/1.1 200 OK", status)
            end
            -- one more request on the first connection: not a new connection
            socks[1]:send(raw_request("dingbot-ok"))
            read_response(socks[1])
            for i = 1, 5 do socks[i]:close() end
            socket.sleep(0.05)
            local after = emulator.stats(h)
            assert.same({ 5, 5, 5, 5 }, { during.in_flight, during.max_in_flight, during.connections,
                during.requests })
            assert.same({ 0, 5, 5, 6, 6, 0 }, { after.in_flight, after.max_in_flight, after.connections,
                after.requests, after.robot_requests, after.refused })
            emulator.reset(h)
            assert.same({ in_flight = 0, max_in_flight = 0, connections = 0, requests = 0,
                robot_requests = 0, refused = 0 }, emulator.stats(h))
            -- a request that ends by a dropped connection leaves the count too
            emulator.config(h, { delay_ms = 0 })
            post("dingbot-ok")
            local sock = connect()
            sock:send(raw_request("fault-close-mid-body"))
            sock:receive("*a")
            sock:close()
            socket.sleep(0.05)
            assert.same({ 0, 1, 2 }, { emulator.stats(h).in_flight, emulator.stats(h).max_in_flight,
                emulator.stats(h).connections })
        end)

        it("answers flaky-ipblock-N-TAG with a short per-IP block verdict N times", function()
            local code = "flaky-ipblock-1-" .. math.floor(socket.gettime() * 1000)
            local status, _, body = post(code)
            assert.equal(403, status)
            local v = cjson.decode(body)
            assert.same({ 1111, 0.02, "deny" }, { v.status, v.wait, v.punish })
            assert.matches(REQUEST_ID, v.uuid)
            status, _, body = post(code)
            assert.equal(200, status)
            assert.same({ result = true }, cjson.decode(body))
        end)

        it("takes rate_limit at start and from the command line", function()
            local h2 = emulator.start{ rate_limit = 7, delay_ms = 3 }
            local ok, err = pcall(function()
                assert.same({ delay_ms = 3, rate_limit = 7 }, emulator.config(h2, {}))
                local lua = lua_interpreter()
                local rc, out = sh(shell.lua_env(package.path, package.cpath) .. " " .. lua
                    .. " emulator/control.lua config --prefix " .. q(h2.prefix) .. " --rate-limit 2")
                assert.equal(0, rc, out)
                assert.same({ delay_ms = 3, rate_limit = 2 }, cjson.decode(out))
                rc, out = sh(shell.lua_env(package.path, package.cpath) .. " " .. lua
                    .. " emulator/control.lua stats --prefix " .. q(h2.prefix))
                assert.equal(0, rc, out)
                assert.equal(0, cjson.decode(out).max_in_flight)
            end)
            emulator.stop(h2)
            assert(ok, err)
        end)
    end)

    describe("broken transports", function()
        it("closes the connection in the middle of the body", function()
            local sock = connect()
            sock:send(raw_request("fault-close-mid-body"))
            local data, err, partial = sock:receive("*a")
            sock:close()
            data = data or partial
            assert.is_nil(err)
            assert.matches("^HTTP/1%.1 200 OK\r\n", data)
            assert.matches("\r\nContent%-Length: 100\r\n", data)
            assert.matches("\r\nx%-acs%-request%-id: [%x%-]+\r\n", data)
            assert.equal('\r\n\r\n{"resu', data:sub(-10))
        end)

        it("closes the connection inside a chunk", function()
            local sock = connect()
            sock:send(raw_request("fault-truncated-chunked"))
            local data, err = sock:receive("*a")
            sock:close()
            assert.is_nil(err)
            assert.matches("\r\nTransfer%-Encoding: chunked\r\n", data)
            assert.equal('\r\n\r\n20\r\n{"result":tr', data:sub(-20))
        end)

        it("streams fault-endless until the client goes away", function()
            local sock = connect()
            sock:send(raw_request("fault-endless"))
            local t0 = socket.gettime()
            local got = 0
            while got < 1024 * 1024 do
                local data, err, partial = sock:receive(64 * 1024)
                data = data or partial
                assert.is_nil(err == "closed" and err or nil)
                got = got + #data
            end
            sock:close()
            assert.is_true(socket.gettime() - t0 < 3)
            -- the server is still fine afterwards
            assert.equal(200, (post("dingbot-ok")))
        end)

        -- raw heads a client must refuse (then the server closes)
        local function raw(code)
            local sock = connect()
            sock:settimeout(10)
            sock:send(raw_request(code))
            local data, err, partial = sock:receive("*a")
            sock:close()
            assert.is_nil(err)
            data = data or partial
            local head, body = data:match("^(.-\r\n)\r\n(.*)$")
            return head, body
        end

        it("floods the head with 100,000 header lines", function()
            local head, body = raw("fault-header-flood")
            assert.matches("^HTTP/1%.1 200 OK\r\n", head)
            local n = select(2, head:gsub("\r\nX%-Flood%-%d+: v", ""))
            assert.equal(100000, n)
            assert.equal('{"result":true}', body)
        end)

        it("sends one 10 MiB header line", function()
            local head, body = raw("fault-header-huge")
            local huge = head:match("\r\nX%-Huge: (h+)\r\n")
            assert.equal(10 * 1024 * 1024, #huge)
            assert.equal('{"result":true}', body)
        end)

        it("sends the framings both transports refuse", function()
            local head, body = raw("fault-gzip-chunked")
            assert.matches("\r\nTransfer%-Encoding: gzip, chunked\r\n", head)
            assert.is_nil(head:find("Content-Length", 1, true))
            assert.equal('f\r\n{"result":true}\r\n0\r\n\r\n', body)
            head = raw("fault-101")
            assert.matches("^HTTP/1%.1 101 Switching Protocols\r\n", head)
            head = raw("fault-huge-length")
            assert.matches("\r\nContent%-Length: 10000000000\r\n", head)
            head = raw("fault-bad-length")
            assert.matches("\r\nContent%-Length: 99999999999999999999999\r\n", head)
        end)

        it("trickles fault-trickle one byte every 200 ms", function()
            local sock = connect()
            sock:send(raw_request("fault-trickle"))
            sock:settimeout(0.5)
            local data, err, partial = sock:receive("*a")
            sock:close()
            assert.is_nil(data)
            assert.equal("timeout", err)
            local body = partial:match("\r\n\r\n(.*)$")
            assert.matches("Content%-Length: 50\r\n", partial)
            assert.truthy(#body >= 1 and #body <= 4, "got " .. #body .. " bytes")
        end)
    end)

    describe("recording", function()
        it("records requests, reusing one keep-alive connection", function()
            local sock = connect()
            sock:send(raw_request("dingbot-ok", "X-Custom-Header: One\r\n"))
            local status1, _, body1 = read_response(sock)
            sock:send(raw_request("dingbot-false"))
            local status2, _, body2 = read_response(sock)
            sock:close()
            assert.equal("HTTP/1.1 200 OK", status1)
            assert.equal('{"result":true}', body1)
            assert.equal("HTTP/1.1 200 OK", status2)
            assert.equal('{"result":false}', body2)
            http.request(h.url .. "/__emulator/health") -- control routes: not recorded

            local reqs = emulator.requests(h)
            assert.equal(2, #reqs)
            local r1, r2 = reqs[1], reqs[2]
            assert.equal("POST", r1.method)
            assert.equal(PATH, r1.uri)
            assert.equal("http", r1.scheme)
            assert.equal('{"robotCode":"dingbot-ok"}', r1.body)
            assert.equal(TOKEN, r1.headers["x-acs-dingtalk-access-token"])
            assert.equal("One", r1.headers["x-custom-header"])
            assert.equal("application/json", r1.headers["content-type"])
            assert.equal(r1.connection, r2.connection)
            assert.equal(1, r1.connection_requests)
            assert.equal(2, r2.connection_requests)

            post("dingbot-ok")
            reqs = emulator.requests(h)
            assert.equal(3, #reqs)
            assert.not_equal(r1.connection, reqs[3].connection)

            emulator.reset(h)
            assert.same({}, emulator.requests(h))
        end)

        it("records rejected requests too", function()
            post("dingbot-ok", { token = false, body = "raw \0 bytes" })
            local reqs = emulator.requests(h)
            assert.equal(1, #reqs)
            assert.equal("raw \0 bytes", reqs[1].body)
            assert.is_nil(reqs[1].headers["x-acs-dingtalk-access-token"])
        end)
    end)

    describe("TLS", function()
        it("works with the test CA, on 127.0.0.1 and localhost", function()
            for _, base in ipairs{ h.tls_url, h.tls_url_localhost } do
                local rc, out = curl_post(base, "dingbot-ok", "--cacert " .. q(h.cafile))
                assert.equal(0, rc, out)
                assert.same({ result = true }, cjson.decode(out))
            end
            local reqs = emulator.requests(h)
            assert.equal(2, #reqs)
            assert.equal("https", reqs[1].scheme)
            assert.equal("localhost", reqs[2].sni)
        end)

        it("fails without the CA, with the other CA and on a mismatched host", function()
            local rc = curl_post(h.tls_url, "dingbot-ok")
            assert.equal(60, rc)
            rc = curl_post(h.tls_url, "dingbot-ok", "--cacert " .. q(h.other_cafile))
            assert.equal(60, rc)
            local out
            rc, out = curl_post(h.tls_url_mismatch, "dingbot-ok", "--cacert " .. q(h.cafile))
            assert.equal(60, rc)
            assert.matches("subject", out)
            assert.same({}, emulator.requests(h))
        end)

        it("serves the broken transports over TLS as well", function()
            local rc = curl_post(h.tls_url, "fault-close-mid-body", "--cacert " .. q(h.cafile))
            assert.equal(18, rc) -- CURLE_PARTIAL_FILE
        end)
    end)
end)

describe("emulator lifecycle", function()
    local prefixes = {}

    it("stops cleanly and removes the prefix it created", function()
        local h = emulator.start()
        prefixes[#prefixes + 1] = h.prefix
        assert.is_true(nginx_left(h.prefix))
        emulator.stop(h)
        assert.is_false(emulator.is_running(h))
        assert.is_false(nginx_left(h.prefix))
        assert.is_nil(io.open(h.prefix .. "/conf/nginx.conf"))
    end)

    it("keeps a given prefix and reports a busy port with the error log", function()
        local _, dir = sh("mktemp -d")
        dir = dir:gsub("%s+$", "")
        local h = emulator.start{ prefix = dir }
        prefixes[#prefixes + 1] = dir
        local ok, err = pcall(emulator.start, { port = h.port, tls_port = h.tls_port })
        emulator.stop(h)
        assert.is_false(ok)
        assert.matches("Address already in use", err)
        assert.truthy(io.open(dir .. "/conf/nginx.conf"))
        assert.is_false(nginx_left(dir))
        os.execute("rm -rf " .. q(dir))
    end)

    it("reports a failed nginx start with the tail of error.log", function()
        local rc, out = sh("DINGTALK_NGINX_MODULES_DIR=/nonexistent " .. q(lua_interpreter())
            .. " emulator/control.lua start")
        assert.equal(1, rc)
        assert.matches("nginx failed to start", out)
        assert.matches("/nonexistent/ndk_http_module.so", out, 1, true)
    end)

    it("runs from the command line", function()
        local lua = lua_interpreter()
        local rc, out = sh(q(lua) .. " emulator/control.lua start")
        assert.equal(0, rc, out)
        local info = {}
        for k, v in out:gmatch("([%w_]+)=([^\n]*)") do info[k] = v end
        prefixes[#prefixes + 1] = info.prefix
        for _, k in ipairs{ "url", "tls_url", "cafile", "pid", "prefix" } do
            assert.truthy(info[k], k)
        end
        local body, status = http.request(info.url .. "/__emulator/health")
        assert.same({ "ok\n", 200 }, { body, status })
        rc, out = sh(q(lua) .. " emulator/control.lua stop --prefix " .. q(info.prefix))
        assert.equal(0, rc, out)
        assert.is_false(emulator.is_running(tonumber(info.pid)))
        assert.is_nil(io.open(info.prefix .. "/conf/nginx.conf"))
    end)

    it("leaves no nginx behind", function()
        assert.truthy(main_prefix)
        prefixes[#prefixes + 1] = main_prefix
        for _, p in ipairs(prefixes) do
            assert.is_false(nginx_left(p), p)
        end
    end)
end)
