-- The module inside nginx (lua-nginx-module): the cosocket transport gives
-- the same results and error tables as libcurl, it does not block the
-- worker, and libcurl still serves where cosockets cannot run.
--
-- Two nginx instances: the emulator (spec.helpers.emulator) and a second
-- one running the module (spec.helpers.openresty, worker_processes 1, built
-- against build/luajit). The libcurl side of each comparison runs here, in
-- the busted interpreter.
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local openresty = require "spec.helpers.openresty"
local scenarios = require "spec.helpers.scenarios"
local dingtalk = require "dingtalk"

local TOKEN = scenarios.TOKEN

-- One attempt per call on both sides: this compares transports, not the
-- retry loop above them (when the client has one).
local BASE = {}
for k, v in pairs(scenarios.client_options) do BASE[k] = v end
if require("dingtalk.client").OPTIONS.retries then BASE.retries = 0 end

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end


local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- In-process call over libcurl: the same shape as the nginx handler's answer.
local function via_curl(opts, robotCode, token)
  local c = dingtalk.new(merge(opts, { transport = "curl" }))
  local ok, v = pcall(c.robot.clear_plugins, { robotCode = robotCode, token = token })
  c:close()
  if ok then return { ok = true, result = v } end
  assert(type(v) == "table", "errors are tables: " .. tostring(v))
  local e = {}
  for k, x in pairs(v) do e[k] = x end
  return { ok = false, err = e }
end

-- Field by field. request_id differs per request: presence only. A
-- transport error's message is libcurl's own text on one side and ours on
-- the other: presence only, the code says what happened.
local function assert_same_outcome(curl, ngx_res, what)
  assert.are.equal(curl.ok, ngx_res.ok, what .. ": ok differs " .. require("cjson").encode(ngx_res))
  if curl.ok then
    assert.are.equal(curl.result, ngx_res.result, what .. ": result")
    return
  end
  local a, b = curl.err, ngx_res.err
  assert.is_table(b, what .. ": no error table from nginx")
  local keys = {}
  for k in pairs(a) do keys[k] = true end
  for k in pairs(b) do keys[k] = true end
  for k in pairs(keys) do
    if k == "request_id" or (k == "message" and a.kind == "transport") then
      assert.are.equal(type(a[k]), type(b[k]), what .. ": presence of " .. k)
      if b[k] ~= nil then assert.is_true(#b[k] > 0, what .. ": empty " .. k) end
    elseif type(a[k]) == "number" and type(b[k]) == "number" then
      -- nginx's side comes through cjson, which keeps 14 significant digits
      assert.is_true(a[k] == b[k] or math.abs(a[k] - b[k]) <= 1e-12 * math.abs(a[k]),
                     what .. ": field " .. k .. ": " .. a[k] .. " ~= " .. b[k])
    else
      assert.are.same(a[k], b[k], what .. ": field " .. k)
    end
  end
end


-- What the scenario list expects of an outcome (res: ok, result, err).
local function assert_expected(sc, res)
  if not sc.err then
    assert.is_true(res.ok, sc.name .. ": " .. tostring(res.err and res.err.code))
    assert.are.equal(sc.result, res.result)
    return
  end
  local e, got = sc.err, res.err
  assert.is_false(res.ok, sc.name .. ": expected an error")
  assert.are.equal(e.code, got.code, sc.name .. ": code")
  assert.are.equal(e.kind, got.kind, sc.name .. ": kind")
  assert.are.equal(e.retryable, got.retryable, sc.name .. ": retryable")
  assert.are.equal(e.status, got.status, sc.name .. ": status")
  if e.message then assert.are.equal(e.message, got.message) end
  if e.message_match then assert.matches(e.message_match, got.message) end
  if e.excerpt then assert.matches(e.excerpt, got.excerpt) end
  if e.request_id then assert.matches("^[%w%-]+$", got.request_id) end
  if e.retry_after then assert.are.equal(e.retry_after, got.retry_after) end
  if e.retry_after_min then
    assert.is_number(got.retry_after)
    assert.is_true(got.retry_after >= e.retry_after_min, "retry_after " .. tostring(got.retry_after))
  end
  if e.accessdenieddetail then assert.is_table(got.accessdenieddetail) end
end


describe("OpenResty (lua-nginx-module) #nginx", function()
  local emu, nginx, dns

  setup(function()
    -- nginx's resolver: a UDP port that takes queries and never answers
    dns = assert(socket.udp())
    assert(dns:setsockname("127.0.0.1", 0))
    local _, dns_port = dns:getsockname()
    emu, nginx = openresty.start_with_emulator(function(e)
      return openresty.start{ cafile = e.cafile, other_cafile = e.other_cafile,
                              init_endpoint = e.url, token = TOKEN,
                              resolver = "127.0.0.1:" .. dns_port }
    end)
  end)

  teardown(function()
    if nginx then openresty.stop(nginx) end
    if emu then emulator.stop(emu) end
    if dns then dns:close() end
  end)

  local function run(path, query, token, secret)
    local status, res = openresty.get(nginx, path, query, token or TOKEN, secret)
    assert.are.equal(200, status, "nginx answered " .. tostring(status) .. ": " .. tostring(res))
    assert.is_table(res, "not JSON: " .. tostring(res))
    return res
  end

  describe("the scenario list over cosockets", function()
    for _, sc in ipairs(scenarios.list) do
      it(sc.name .. " (" .. sc.robotCode .. ")", function()
        local res = run("/run", merge(BASE, { endpoint = emu.url, robotCode = sc.robotCode }),
                        sc.token or TOKEN)
        assert.are.equal("ngx", res.via, "served by cosockets")
        assert.are.equal("content", res.phase)
        assert_expected(sc, res)
      end)
    end
  end)

  describe("same results as libcurl", function()
    for _, sc in ipairs(scenarios.list) do
      it(sc.name .. " (" .. sc.robotCode .. ")", function()
        local opts = merge(BASE, { endpoint = emu.url })
        local token = sc.token or TOKEN
        local curl = via_curl(opts, sc.robotCode, token)
        local res = run("/run", merge(BASE,
                        { endpoint = emu.url, robotCode = sc.robotCode }), token)
        assert.are.equal("ngx", res.via, "served by cosockets")
        assert_same_outcome(curl, res, sc.name)
        -- and what the scenario list expects, so both are not equally wrong
        assert_expected(sc, curl)
      end)
    end

    local extra = {
      { name = "TLS, verified (localhost)", code = "transport.none", robotCode = "dingbot-ok",
        endpoint = function() return emu.tls_url_localhost end,
        ca = function() return emu.cafile end },
      { name = "TLS, name mismatch", code = "transport.tls", robotCode = "dingbot-ok",
        endpoint = function() return emu.tls_url_mismatch end,
        ca = function() return emu.cafile end },
      { name = "TLS, untrusted CA", code = "transport.tls", robotCode = "dingbot-ok",
        path = "/run-other-ca",   -- its lua_ssl_trusted_certificate is that other CA
        endpoint = function() return emu.tls_url_localhost end,
        ca = function() return emu.other_cafile end },
      { name = "connection refused", code = "transport.connect", robotCode = "dingbot-ok",
        endpoint = function() return "http://127.0.0.1:" .. free_port() end },
      { name = "trickling body past the deadline", code = "transport.timeout",
        robotCode = "fault-trickle", opts = { timeout = 800 } },
      { name = "body exactly max_body", code = "transport.none", robotCode = "dingbot-ok",
        opts = { max_body = 15 } },
      { name = "body one byte over max_body", code = "transport.too_large", robotCode = "dingbot-ok",
        opts = { max_body = 14 } },
      { name = "slow answer within the timeout", code = "transport.none", robotCode = "fault-slow-300",
        opts = { timeout = 2000 } },
    }
    for _, x in ipairs(extra) do
      it(x.name, function()
        local endpoint = x.endpoint and x.endpoint() or emu.url
        -- the cafile, for nginx, only keys the connection pool (a client with
        -- its own CA never gets a connection verified against another one)
        local opts = merge(merge(BASE, x.opts),
                           { endpoint = endpoint, cafile = x.ca and x.ca() })
        local curl = via_curl(opts, x.robotCode, TOKEN)
        local res = run(x.path or "/run", merge(opts, { robotCode = x.robotCode }))
        assert.are.equal("ngx", res.via)
        assert_same_outcome(curl, res, x.name)
        if x.code == "transport.none" then
          assert.is_true(res.ok)
        else
          assert.are.equal(x.code, res.err.code)
        end
        -- no call outlives its timeout by much
        assert.is_true(res.ms < (opts.timeout or 10000) + 250, "took " .. res.ms .. " ms")
      end)
    end

    -- A known difference, pinned: nginx checks the certificate's DNS names
    -- only (X509_check_host), so an https endpoint given as an IP address
    -- fails verification over cosockets while libcurl accepts the IP SAN.
    it("TLS to an IP address: libcurl matches the IP SAN, nginx cannot", function()
      local opts = merge(BASE, { endpoint = emu.tls_url })
      local curl = via_curl(merge(opts, { cafile = emu.cafile }), "dingbot-ok", TOKEN)
      assert.is_true(curl.ok)
      local res = run("/run", merge(opts, { robotCode = "dingbot-ok" }))
      assert.is_false(res.ok)
      assert.are.equal("transport.tls", res.err.code)
      -- "certificate host mismatch"; or, when the handshake completes at
      -- once (lua-nginx-module#2506), only that verification failed
      assert.is_truthy(res.err.message:find("host mismatch", 1, true)
                       or res.err.message:find("verification failed", 1, true), res.err.message)
    end)
  end)

  describe("request bytes", function()
    -- A listener here plays the server: nginx's call (either transport)
    -- connects to it while this process waits for nginx's answer.
    local server
    before_each(function()
      server = assert(socket.bind("127.0.0.1", 0))
      server:settimeout(5)
    end)
    after_each(function() server:close() end)

    local function capture(query, reply, listener)
      listener = listener or server
      local _, lport, family = listener:getsockname()
      local host = family == "inet6" and "[::1]" or "127.0.0.1"
      local c = openresty.send(nginx, "/run", merge({ endpoint = "http://" .. host .. ":" .. lport,
                                                     robotCode = "dingbot-ok" }, query), TOKEN)
      local peer = assert(listener:accept())
      peer:settimeout(5)
      local lines = {}
      repeat
        local line = assert(peer:receive("*l"))
        lines[#lines + 1] = line
      until line == ""
      local len = tonumber(table.concat(lines, "\n"):match("\nContent%-Length: (%d+)"))
      local body = assert(peer:receive(len))
      -- the client may stop reading (and close) before a long reply is out
      peer:send(reply)
      peer:close()
      local status, res = openresty.receive(c)
      assert.are.equal(200, status)
      return table.concat(lines, "\r\n") .. "\r\n" .. body, res
    end

    local OK = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
      .. "Connection: close\r\n\r\n{\"result\":true}"

    it("are those of libcurl, byte for byte", function()
      local via_ngx, r1 = capture({}, OK)
      local via_lib, r2 = capture({ transport = "curl" }, OK)
      assert.are.equal("ngx", r1.via)
      assert.are.equal("curl", r2.via)
      assert.is_true(r1.result)
      assert.is_true(r2.result)
      assert.are.equal(via_lib, via_ngx)
      assert.matches("^POST /v1%.0/robot/plugins/clear HTTP/1%.1\r\nHost: 127%.0%.0%.1:%d+\r\n"
        .. "User%-Agent: lua%-dingtalk/[^\r]+\r\nx%-acs%-dingtalk%-access%-token: " .. TOKEN:gsub("%p", "%%%0")
        .. "\r\nContent%-Type: application/json\r\nAccept: application/json\r\nContent%-Length: 26\r\n\r\n"
        .. '{"robotCode":"dingbot%-ok"}$', via_ngx)
    end)

    it("an IPv6 loopback endpoint (http://[::1]:port) works on both", function()
      local v6 = assert(socket.bind("::1", 0))
      v6:settimeout(5)
      local ok, err = pcall(function()
        local via_ngx, r1 = capture({}, OK, v6)
        local via_lib, r2 = capture({ transport = "curl" }, OK, v6)
        assert.are.equal("ngx", r1.via)
        assert.is_true(r1.result, tostring(r1.err and r1.err.message))
        assert.is_true(r2.result)
        assert.are.equal(via_lib, via_ngx)
        assert.matches("\r\nHost: %[::1%]:%d+\r\n", via_ngx)
      end)
      v6:close()
      assert(ok, err)
    end)

    it("a chunked answer with a trailer reads the same", function()
      local reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        .. "x-acs-request-id: chunked-1\r\nConnection: close\r\n\r\n"
        .. "5\r\n{\"res\r\na;ext=1\r\nult\":true}\r\n0\r\nx-trailer: 1\r\n\r\n"
      local _, r1 = capture({}, reply)
      local _, r2 = capture({ transport = "curl" }, reply)
      assert.is_true(r1.ok, tostring(r1.err and r1.err.code))
      assert.is_true(r1.result)
      assert.are.same(r2.result, r1.result)
    end)

    it("an answer that is not HTTP is transport.bad_response on both", function()
      local _, r1 = capture({}, "SSH-2.0-OpenSSH_9.2\r\n")
      local _, r2 = capture({ transport = "curl" }, "SSH-2.0-OpenSSH_9.2\r\n")
      assert.are.equal("transport.bad_response", r2.err.code)
      assert_same_outcome({ ok = r2.ok, err = r2.err }, r1, "not HTTP")
    end)

    -- Heads and framings at the edges of the contract both transports keep:
    -- the cosocket side is checked against the expected code first, then
    -- libcurl against it.
    local function head(lines, body)
      return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" .. table.concat(lines, "\r\n")
        .. "\r\nConnection: close\r\n\r\n" .. (body or '{"result":true}')
    end
    local function filler(bytes)   -- header lines of 1000 bytes each, CR LF included
      local t = {}
      for i = 1, math.floor(bytes / 1000) do t[i] = string.format("X-Fill-%05d: %s", i, ("f"):rep(984)) end
      return t
    end
    local function plus(t, ...)
      local out = {}
      for _, x in ipairs(t) do out[#out + 1] = x end
      for _, x in ipairs{ ... } do out[#out + 1] = x end
      return out
    end
    local edges = {
      { "Content-Length 2^63 - 1 (above max_body)", head{ "Content-Length: 9223372036854775807" },
        "transport.too_large" },
      { "Content-Length 2^63 (past 64 bits)", head{ "Content-Length: 9223372036854775808" },
        "transport.bad_response" },
      { "Content-Length of 16 digits (above max_body)", head{ "Content-Length: 1000000000000000" },
        "transport.too_large" },
      { "Content-Length 15 with 22 leading zeros", head{ "Content-Length: 000000000000000000000015" },
        true },
      { "Content-Length -1", head{ "Content-Length: -1" }, "transport.bad_response" },
      { "Content-Length 15x", head{ "Content-Length: 15x" }, "transport.bad_response" },
      { "Transfer-Encoding gzip then chunked (two lines)",
        head({ "Transfer-Encoding: gzip", "Transfer-Encoding: chunked" },
             "f\r\n{\"result\":true}\r\n0\r\n\r\n"), "transport.bad_response" },
      { "Transfer-Encoding: Chunked (any case)",
        head({ "Transfer-Encoding: Chunked" }, "f\r\n{\"result\":true}\r\n0\r\n\r\n"), true },
      { "headers of 110 KB in 1 KB lines", head(plus(filler(110000), "Content-Length: 15")),
        "transport.bad_response" },
      { "headers of 90 KB in 1 KB lines", head(plus(filler(90000), "Content-Length: 15")), true },
      -- 80,000 blanks inside a value: trimming it must not take quadratic
      -- time (a Lua pattern did: ~15 s of a blocked worker)
      { "a header value with 80,000 inner blanks", head{ "X-Blank: b" .. (" "):rep(80000) .. "b",
                                                         "Content-Length: 15" }, true, 5000 },
      -- a chunk size libcurl takes (up to 16 hex digits, signed 64-bit) is
      -- judged by the bytes that follow: past max_body (10 here) too large
      { "a chunk of 4 GiB announced, max_body bytes exceeded",
        head({ "Transfer-Encoding: chunked" }, "100000000\r\n" .. ("x"):rep(40)), "transport.too_large",
        nil, { max_body = 10 } },
      { "a chunk of 2^63 - 1 announced, max_body bytes exceeded",
        head({ "Transfer-Encoding: chunked" }, "7fffffffffffffff\r\n" .. ("x"):rep(40)), "transport.too_large",
        nil, { max_body = 10 } },
      { "a chunk size of 17 hex digits", head({ "Transfer-Encoding: chunked" },
        "0000000000000000f\r\n{\"result\":true}\r\n0\r\n\r\n"), "transport.closed" },
    }
    for _, x in ipairs(edges) do
      -- one attempt: a retryable failure would come back for a listener
      -- that accepts once
      local query = merge({ retries = 0 }, x[5])
      it(x[1] .. ": cosockets", function()
        local _, res = capture(query, x[2])
        assert.are.equal("ngx", res.via)
        if x[4] then assert.is_true(res.ms < x[4], "took " .. res.ms .. " ms") end
        if x[3] == true then
          assert.is_true(res.ok, tostring(res.err and res.err.code))
          assert.is_true(res.result)
        else
          assert.is_false(res.ok)
          assert.are.equal(x[3], res.err.code)
          assert.are.equal(x[3] == "transport.closed", res.err.retryable)
        end
      end)
      it(x[1] .. ": libcurl agrees", function()
        local _, r1 = capture(query, x[2])
        local _, r2 = capture(merge(query, { transport = "curl" }), x[2])
        assert.are.equal("curl", r2.via)
        assert_same_outcome({ ok = r2.ok, result = r2.result, err = r2.err }, r1, x[1])
      end)
    end
  end)

  -- issue 10 point 8: timeout bounds the name lookup too. nginx's resolver
  -- here (a UDP port on 127.0.0.1) takes queries and never answers, with
  -- resolver_timeout 30s: only the call's own deadline can end the wait.
  -- (https: plain http to a name that is not loopback needs insecure_http;
  -- the lookup comes before TLS either way.)
  describe("a resolver that never answers", function()
    for _, x in ipairs{ { "timeout", { timeout = 500, connect_timeout = 10000 } },
                        { "connect_timeout", { timeout = 10000, connect_timeout = 500 } } } do
      it("the call ends at its " .. x[1] .. " with transport.timeout", function()
        local port = free_port()
        local t0 = socket.gettime()
        local res = run("/run", merge(merge(BASE, x[2]),
          { endpoint = "https://some-name.invalid:" .. port, robotCode = "dingbot-ok" }))
        local wall = socket.gettime() - t0
        assert.are.equal("ngx", res.via)
        assert.is_false(res.ok)
        assert.are.equal("transport", res.err.kind)
        assert.are.equal("transport.timeout", res.err.code)
        assert.is_true(res.err.retryable)
        assert.is_true(res.ms >= 450, "took " .. res.ms .. " ms")
        assert.is_true(wall < 2, string.format("took %.3f s", wall))
      end)
    end

    for _, p in ipairs{ { "/rewrite", "rewrite" }, { "/access", "access" }, { "/timer", "timer" } } do
      it("the same in the " .. p[2] .. " phase", function()
        local res = run(p[1], merge(BASE, { endpoint = "https://some-name.invalid:1", robotCode = "dingbot-ok",
                                            timeout = 300 }))
        assert.are.equal(p[2], res.phase)
        assert.are.equal("ngx", res.via)
        assert.are.equal("transport.timeout", res.err.code)
        assert.is_true(res.ms < 2000, "took " .. res.ms .. " ms")
      end)
    end

    it("and the worker serves the next call at once", function()
      local r = run("/run", merge(BASE, { endpoint = "https://some-name.invalid:1", robotCode = "dingbot-ok",
                                timeout = 300 }))
      assert.are.equal("transport.timeout", r.err.code)
      local res = run("/run", merge(BASE, { endpoint = emu.url, robotCode = "dingbot-ok" }))
      assert.is_true(res.result)
    end)
  end)

  -- issue 10 point 6: once (what retries = 0 asks for) puts the request on
  -- the wire at most once. flaky-drop-1-TAG: the server reads the first
  -- request for that code and closes without answering.
  describe("at most once", function()
    local function for_code(code)
      local out = {}
      for _, r in ipairs(emulator.requests(emu)) do
        if r.body:find(code, 1, true) then out[#out + 1] = r end
      end
      return out
    end

    local function warm()
      -- a kept-alive connection in the pool the next call would take
      local res = run("/post", merge(BASE, { endpoint = emu.url, robotCode = "dingbot-ok" }))
      assert.is_true(res.result)
      local reqs = emulator.requests(emu)
      return reqs[#reqs]
    end

    it("once: a fresh connection, and transport.closed when it dies", function()
      emulator.reset(emu)
      local warmed = warm()
      local code = "flaky-drop-1-once" .. math.random(1e9)
      local res = run("/post", merge(BASE, { endpoint = emu.url, robotCode = code, once = "true" }))
      assert.is_false(res.ok)
      assert.are.equal("transport.closed", res.err.code)
      local reqs = for_code(code)
      assert.are.equal(1, #reqs, "the server saw the request " .. #reqs .. " times")
      assert.are_not.equal(warmed.connection, reqs[1].connection)
      assert.are.equal(1, reqs[1].connection_requests)
      -- and that connection is not kept either: the next once call opens another
      res = run("/post", merge(BASE, { endpoint = emu.url, robotCode = "dingbot-ok", once = "true" }))
      assert.is_true(res.result)
      local after = emulator.requests(emu)
      assert.are.equal(1, after[#after].connection_requests)
    end)

    it("without once: the pooled connection, and one more try when it was dead", function()
      emulator.reset(emu)
      local warmed = warm()
      local code = "flaky-drop-1-twice" .. math.random(1e9)
      local res = run("/post", merge(BASE, { endpoint = emu.url, robotCode = code }))
      assert.is_true(res.result)
      local reqs = for_code(code)
      assert.are.equal(2, #reqs)
      assert.are.equal(warmed.connection, reqs[1].connection)
      assert.are_not.equal(warmed.connection, reqs[2].connection)
    end)

    -- end to end: client.lua passes once = true when retries is 0 (H4)
    it("a call with retries = 0 runs once", function()
      emulator.reset(emu)
      warm()
      local code = "flaky-drop-1-retries0-" .. math.random(1e9)
      local res = run("/run", merge(BASE, { endpoint = emu.url, robotCode = code, retries = 0 }))
      assert.are.equal("ngx", res.via)
      assert.is_false(res.ok)
      assert.are.equal("transport.closed", res.err.code)
      assert.are.equal(1, #for_code(code))
    end)
  end)

  -- issue 10 points 1 and 2 on cosockets: whatever the server echoes and
  -- wherever a field is cut, no 8-byte window of the token (or the app
  -- secret) reaches the error, its fields, nested tables or tostring.
  describe("secrets echoed by the server", function()
    local CUTS = { 80, 127, 200, 512 }
    local function pads()
      local ns = {}
      for _, cut in ipairs(CUTS) do
        for n = cut - 60, cut + 4, 4 do ns[#ns + 1] = n end
      end
      return ns
    end

    local function assert_clean(res, secret, what)
      assert.is_false(res.ok, what .. ": expected an error")
      assert.is_table(res.strings, what)
      local s, w = require("spec.helpers.reachable").leak(res.strings, secret)
      assert.is_nil(w, what .. ": '" .. tostring(w) .. "' of the secret in: " .. tostring(s))
    end

    for _, kind in ipairs{ "pad", "html", "rid" } do
      it("the token, fault-echo-" .. kind .. "-N across the cuts", function()
        for _, n in ipairs(pads()) do
          local code = "fault-echo-" .. kind .. "-" .. n
          local res = run("/run", merge(BASE, { endpoint = emu.url, robotCode = code, reach = 1 }))
          assert.are.equal("ngx", res.via)
          assert.are.equal(kind == "html" and "http.502" or "param.illegal", res.err.code, code)
          assert_clean(res, TOKEN, code)
        end
      end)
    end

    local SECRET = scenarios.SECRET
    for _, kind in ipairs{ "pad", "html", "rid" } do
      it("the app secret, app-echo-" .. kind .. "-N across the cuts (once, secret)", function()
        for _, n in ipairs(pads()) do
          local key = "app-echo-" .. kind .. "-" .. n
          local res = run("/post", merge(BASE, { endpoint = emu.url, appKey = key, reach = 1 }),
                          nil, SECRET)
          assert.are.equal(kind == "html" and "http.502" or "param.illegal", res.err.code, key)
          assert_clean(res, SECRET, key)
        end
      end)
    end

    it("the app secret, a page showing the request body (app-echo-body)", function()
      local res = run("/post", merge(BASE, { endpoint = emu.url, appKey = "app-echo-body", reach = 1 }),
                      nil, SECRET)
      assert.are.equal("http.400", res.err.code)
      assert_clean(res, SECRET, "app-echo-body")
    end)
  end)

  describe("transport selection", function()
    it("init_by_lua loads the module and calls over libcurl", function()
      local status, res = openresty.get(nginx, "/init")
      assert.are.equal(200, status)
      assert.is_true(res.loaded)
      assert.are.equal("init", res.phase)
      assert.are.equal("curl", res.via)
      assert.is_true(res.result)
    end)

    for _, p in ipairs{ { "/rewrite", "rewrite" }, { "/access", "access" }, { "/run", "content" },
                        { "/timer", "timer" } } do
      it(p[2] .. " phase uses cosockets", function()
        local res = run(p[1], { endpoint = emu.url, robotCode = "dingbot-ok" })
        assert.are.equal(p[2], res.phase)
        assert.is_true(res.cosockets)
        assert.are.equal("ngx", res.via)
        assert.is_true(res.result)
      end)
    end

    it("set_by_lua (no cosockets) falls back to libcurl", function()
      local res = run("/set", { endpoint = emu.url, robotCode = "dingbot-ok" })
      assert.are.equal("set", res.phase)
      assert.is_false(res.cosockets)
      assert.are.equal("curl", res.via)
      assert.is_true(res.result)
    end)

    it('transport = "curl" forces libcurl in the content phase', function()
      local res = run("/run", { endpoint = emu.url, robotCode = "dingbot-stopped", transport = "curl" })
      assert.are.equal("curl", res.via)
      assert.are.equal("invalidRequest.robotIsStop", res.err.code)
    end)

    it('transport = "ngx" where cosockets cannot run is an argument error', function()
      local res = run("/set", { endpoint = emu.url, robotCode = "dingbot-ok", transport = "ngx" })
      assert.is_false(res.ok)
      assert.are.equal("argument", res.err.kind)
      assert.are.equal("argument.transport", res.err.code)
    end)

    it('plain Lua refuses transport = "ngx" and checks the option', function()
      local ok, err = pcall(dingtalk.new, { endpoint = emu.url, transport = "ngx" })
      assert.is_false(ok)
      assert.are.equal("argument.option", err.code)
      ok, err = pcall(dingtalk.new, { endpoint = emu.url, transport = "cosocket" })
      assert.is_false(ok)
      assert.are.equal("transport", err.field)
    end)
  end)

  describe("connections", function()
    local function last_two()
      local reqs = emulator.requests(emu)
      return reqs[#reqs - 1], reqs[#reqs]
    end

    it("are kept alive and reused (plain)", function()
      emulator.reset(emu)
      run("/run", { endpoint = emu.url, robotCode = "dingbot-ok" })
      run("/run", { endpoint = emu.url, robotCode = "dingbot-ok" })
      local a, b = last_two()
      assert.are.equal(a.connection, b.connection)
      assert.are.equal(a.connection_requests + 1, b.connection_requests)
    end)

    it("are kept alive and reused (TLS, SNI set)", function()
      emulator.reset(emu)
      run("/run", { endpoint = emu.tls_url_localhost, robotCode = "dingbot-ok" })
      run("/run", { endpoint = emu.tls_url_localhost, robotCode = "dingbot-ok" })
      local a, b = last_two()
      assert.are.equal("https", b.scheme)
      assert.are.equal("localhost", b.sni)
      assert.are.equal(a.connection, b.connection)
    end)

    it("are not reused after an error answer that closes them", function()
      emulator.reset(emu)
      run("/run", { endpoint = emu.url, robotCode = "fault-close-mid-body" })
      local res = run("/run", { endpoint = emu.url, robotCode = "dingbot-ok" })
      assert.is_true(res.result)
      local a, b = last_two()
      assert.are_not.equal(a.connection, b.connection)
    end)
  end)

  describe("does not block the worker", function()
    local function fire(n, query)
      local conns = {}
      local t0 = socket.gettime()
      for i = 1, n do conns[i] = openresty.send(nginx, "/run", query, TOKEN) end
      local results = {}
      for i = 1, n do
        local status, res = openresty.receive(conns[i])
        assert.are.equal(200, status)
        results[i] = res
      end
      return socket.gettime() - t0, results
    end

    local function summary(results)
      local lo, hi, trues = math.huge, 0, 0
      for _, r in ipairs(results) do
        lo, hi = math.min(lo, r.ms), math.max(hi, r.ms)
        if r.result == true then trues = trues + 1 end
      end
      return lo, hi, trues
    end

    it("50 concurrent 200 ms calls finish in a small multiple of 200 ms", function()
      local n = 50
      local wall, results = fire(n, { endpoint = emu.url, robotCode = "fault-slow-200", timeout = 5000 })
      for i, r in ipairs(results) do
        assert.is_true(r.ok, "request " .. i .. ": " .. tostring(r.err and r.err.code))
        assert.is_true(r.result)
        assert.are.equal("ngx", r.via)
        assert.is_true(r.ms >= 190, "request " .. i .. " took " .. r.ms .. " ms")
      end
      local lo, hi, trues = summary(results)
      print(string.format("\ncosockets: %d concurrent calls to a 200 ms answer: %.0f ms wall; "
        .. "per call %d-%d ms; %d/%d result true", n, wall * 1000, lo, hi, trues, n))
      assert.is_true(wall < 5 * 0.2, string.format("wall time %.3f s", wall))
    end)

    it("the same with libcurl forced serialises (the worker is blocked)", function()
      local n = 5
      local wall, results = fire(n, { endpoint = emu.url, robotCode = "fault-slow-200", timeout = 5000,
                                       transport = "curl" })
      for _, r in ipairs(results) do
        assert.is_true(r.result)
        assert.are.equal("curl", r.via)
      end
      local lo, hi, trues = summary(results)
      print(string.format("libcurl:   %d concurrent calls to a 200 ms answer: %.0f ms wall; "
        .. "per call %d-%d ms; %d/%d result true", n, wall * 1000, lo, hi, trues, n))
      assert.is_true(wall >= n * 0.2 * 0.95, string.format("wall time %.3f s", wall))
    end)
  end)

  describe("examples/openresty", function()
    local ex
    setup(function()
      ex = openresty.start_example{ endpoint = emu.tls_url_localhost, cafile = emu.cafile, token = TOKEN }
    end)
    teardown(function() if ex then openresty.stop(ex) end end)

    it("clears a bot's entries over verified TLS", function()
      local status, body = openresty.post(ex, "/bots/dingbot-ok/clear-plugins")
      assert.are.equal(200, status)
      assert.are.same({ cleared = true }, body)
    end)

    it("turns the error table into JSON and one log line", function()
      local status, body = openresty.post(ex, "/bots/dingbot-stopped/clear-plugins")
      assert.are.equal(422, status)
      local e = body.error
      assert.are.equal("api", e.kind)
      assert.are.equal("invalidRequest.robotIsStop", e.code)
      assert.are.equal(400, e.status)
      assert.is_false(e.retryable)
      assert.matches("^[%w%-]+$", e.request_id)
      local log = openresty.error_log(ex)
      assert.matches("clear_plugins dingbot%-stopped: dingtalk: invalidRequest%.robotIsStop %(HTTP 400%): "
        .. "The bot has been disabled by the organization %[request [%w%-]+%]", log)
    end)

    it("passes Retry-After on for a throttled call", function()
      local status, body, head = openresty.post(ex, "/bots/fault-429/clear-plugins")
      assert.are.equal(503, status)
      assert.are.equal("http.429", body.error.code)
      assert.is_true(body.error.retryable)
      assert.matches("\r\nRetry%-After: 1\r\n", head)
    end)

    it("keeps the token out of answers and logs", function()
      local _, body = openresty.post(ex, "/bots/fault-echo-token/clear-plugins")
      assert.are.equal("bad token [redacted]", body.error.message)
      assert.is_nil(openresty.error_log(ex):find(TOKEN, 1, true))
    end)

    it("refuses GET", function()
      local status = openresty.get(ex, "/bots/dingbot-ok/clear-plugins")
      assert.are.equal(405, status)
    end)
  end)

  it("never writes the token to nginx's error log", function()
    local log = openresty.error_log(nginx)
    assert.is_true(#log > 0)
    assert.is_nil(log:find(TOKEN, 1, true))
  end)
end)
