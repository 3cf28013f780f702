-- What the libcurl transport puts on the wire and takes from it: the exact
-- request head (the User-Agent once, also in a CONNECT to a proxy), an
-- at-most-once request is never re-sent by libcurl, response heads past
-- the limits and odd framings are refused (and not retried), request ids
-- are kept whole and handed to on_request hooks redacted.
local emulator = require "spec.helpers.emulator"
local reachable = require "spec.helpers.reachable"
local dingtalk = require "dingtalk"
local core = require "dingtalk.core"
local cjson = require "cjson"
local socket = require "socket"
local shell = require "spec.helpers.shell"

local TOKEN = "tok-wire-spec-0123456789abcdefghijklmnopqrstuvwxyz"
local CLEAR = "/v1.0/robot/plugins/clear"


-- A raw server on 127.0.0.1 for a child interpreter that runs `script`
-- (Lua, given the server's URL as ...) with `env` ("NAME=value ...", where
-- $PROXY_PORT is the server's port) and no proxy variables besides: returns the first n heads received, one per
-- connection, byte for byte, the child's output and the port. A CONNECT
-- gets a 403, any other request {"result":true} and the connection closed.
-- lua, cpath: another interpreter for the child, and its core.
local function raw_heads(n, script, env, lua, cpath)
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  env = (env or ""):gsub("%$PROXY_PORT", port)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(script)
  f:close()
  local child = io.popen(shell.lua_env(lua and "./lua/?.lua;;" or "./lua/?.lua;" .. package.path,
                                       cpath or package.cpath,
                                       { "no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "https_proxy",
                                         "HTTPS_PROXY", "all_proxy", "ALL_PROXY" })
                         .. " " .. env .. " " .. (lua or shell.LUA) .. " " .. shell.q(file) .. " "
                         .. shell.q("http://127.0.0.1:" .. port) .. " 2>&1", "r")
  local heads, deadline = {}, socket.gettime() + 10
  server:settimeout(0.1)
  while #heads < n and socket.gettime() < deadline do
    local conn = server:accept()
    if conn then
      conn:settimeout(2)
      local head, len = {}, 0
      repeat
        local line = conn:receive("*l")
        head[#head + 1] = line and line .. "\r\n"
        local cl = line and line:lower():match("^content%-length:%s*(%d+)")
        if cl then len = tonumber(cl) end
      until not line or line == ""
      if len > 0 then conn:receive(len) end
      heads[#heads + 1] = table.concat(head)
      if heads[#heads]:find("^CONNECT") then
        conn:send("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
      else
        conn:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
                  .. "Connection: close\r\n\r\n{\"result\":true}")
      end
      conn:close()
    end
  end
  server:close()
  local out = child:read("*a")
  child:close()
  os.remove(file)
  return heads, out, port
end

describe("the libcurl transport on the wire", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function post(c, base, code, once)
    return core.post(c, base .. CLEAR, TOKEN, '{"robotCode":"' .. code .. '"}', "result", "POST", once)
  end

  local tag = 0
  local function flaky_drop()
    tag = tag + 1
    return "flaky-drop-1-wire" .. os.time() .. "x" .. tag
  end

  for _, which in ipairs{ "url", "tls_url" } do
    local base
    before_each(function() base = emu[which] end)

    it("once: a kept-alive connection that dies after the request is not re-sent (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      assert.is_true(select(2, post(c, base, "dingbot-ok")))     -- the connection is kept alive
      local ok, err = post(c, base, flaky_drop(), true)
      assert.is_nil(ok)
      assert.are.same({ "transport", "transport.closed" }, { err.kind, err.code })
      local reqs = emulator.requests(emu)
      assert.are.equal(2, #reqs, "the request went on the wire once")
      assert.are.equal(reqs[1].connection, reqs[2].connection)
      -- the client goes on, on a new connection
      assert.is_true(select(2, post(c, base, "dingbot-ok", true)))
      reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are_not.equal(reqs[2].connection, reqs[3].connection)
      c:close()
    end)

    it("without once, libcurl's re-send stays (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      assert.is_true(select(2, post(c, base, "dingbot-ok")))
      local code = flaky_drop()
      assert.is_true(select(2, post(c, base, code)))
      local reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are.same({ code, code }, { cjson.decode(reqs[2].body).robotCode, cjson.decode(reqs[3].body).robotCode })
      c:close()
    end)

    it("once keeps the connection alive between calls (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      for _ = 1, 3 do assert.is_true(select(2, post(c, base, "dingbot-ok", true))) end
      local reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are.equal(reqs[1].connection, reqs[3].connection)
      assert.are.equal(3, reqs[3].connection_requests)
      c:close()
    end)
  end

  -- With the default retries: refused once, never sent again.
  local REFUSED = {
    ["fault-header-flood"] = "transport.bad_response",   -- 100,000 header lines
    ["fault-header-huge"] = "transport.bad_response",    -- one 10 MiB header line
    ["fault-gzip-chunked"] = "transport.bad_response",   -- Transfer-Encoding: gzip, chunked
    ["fault-101"] = "transport.bad_response",            -- 101 Switching Protocols, unasked for
    ["fault-bad-length"] = "transport.bad_response",     -- Content-Length 99999999999999999999999
    ["fault-huge-length"] = "transport.too_large",       -- Content-Length 10^10 > max_body
  }
  for _, code in ipairs{ "fault-header-flood", "fault-header-huge", "fault-gzip-chunked", "fault-101",
                         "fault-bad-length", "fault-huge-length" } do
    it(code .. " is " .. REFUSED[code] .. ", not retried", function()
      local c = dingtalk.new{ endpoint = emu.url, sleep = function() end }
      local ok, err = pcall(c.robot.clear_plugins, { robotCode = code, token = TOKEN })
      assert.is_false(ok)
      assert.are.same({ "transport", REFUSED[code], false }, { err.kind, err.code, err.retryable })
      assert.is_nil(err.status)
      assert.are.equal(1, #emulator.requests(emu))
      -- and the client goes on
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
      c:close()
    end)
  end

  describe("core.clear_closure", function()
    local function make(c, opts)
      local calls = { slow = {}, after = {} }
      local bound = {}
      local f = core.clear_closure(c, emu.url .. CLEAR, opts and opts.once or false, bound,
        function(a, b) calls.slow[#calls.slow + 1] = { a, b }; return "slow", a, b end,
        function(token, body, err)
          calls.after[#calls.after + 1] = { token = token, body = body, err = err }
          return "after", err.code
        end)
      bound.clear_plugins = f
      return f, bound, calls
    end

    it("makes the usual call in C: the same request as core.post, the result", function()
      local c = core.new_client{ user_agent = "ua-f/1", direct = true }
      local f, bound, calls = make(c)
      assert.is_true(f{ robotCode = "dingbot-ok", token = TOKEN })
      assert.is_false(bound:clear_plugins{ robotCode = "dingbot-false", token = TOKEN })
      assert.is_true(select(2, core.post(c, emu.url .. CLEAR, TOKEN, '{"robotCode":"dingbot-ok"}', "result")))
      local reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      for i, code in ipairs{ "dingbot-ok", "dingbot-false", "dingbot-ok" } do
        assert.are.equal(CLEAR, reqs[i].path)
        assert.are.same({ robotCode = code }, cjson.decode(reqs[i].body))
        assert.are.equal('{"robotCode":"' .. code .. '"}', reqs[i].body)
        assert.are.equal(TOKEN, reqs[i].headers["x-acs-dingtalk-access-token"])
        assert.are.equal("ua-f/1", reqs[i].headers["user-agent"])
      end
      assert.are.same({ slow = {}, after = {} }, calls)
      c:close()
    end)

    it("leaves every other call to slow, before anything is sent", function()
      local c = core.new_client{ direct = true }
      local f, bound, calls = make(c)
      local others = {
        { robotCode = "dingbot-ok", token = TOKEN, extra = 1 },     -- an unknown key
        { robotCode = "dingbot-ok" },                                -- no token
        { token = TOKEN },                                           -- no robot code
        { robotCode = "a/b", token = TOKEN },                        -- JSON escapes '/'
        { robotCode = 'a"b', token = TOKEN },
        { robotCode = "a\\b", token = TOKEN },
        { robotCode = "", token = TOKEN },
        { robotCode = ("x"):rep(257), token = TOKEN },
        { robotCode = "dingbot-ok", token = ("t"):rep(1025) },
        { robotCode = "dingbot-ok", token = "tok\r\nX: y" },
        { robotCode = "ding\195\169", token = TOKEN },
        { robotCode = 12, token = TOKEN },
      }
      for i, a in ipairs(others) do
        local r, ra = f(a)
        assert.are.equal("slow", r, i)
        assert.are.equal(a, ra, i)
      end
      assert.are.equal("slow", f("not a table"))
      assert.are.equal("slow", select(1, bound:clear_plugins("x")))
      assert.are.equal(#others + 2, #calls.slow)
      assert.are.equal(0, #emulator.requests(emu))
      c:close()
    end)

    it("hands a failed attempt to after: the token, the body, the error", function()
      local c = core.new_client{ direct = true }
      local f, _, calls = make(c, { once = true })
      assert.are.same({ "after", "http.429" }, { f{ robotCode = "fault-429", token = TOKEN } })
      assert.are.equal(1, #emulator.requests(emu))
      assert.are.equal(1, #calls.after)
      assert.are.equal(TOKEN, calls.after[1].token)
      assert.are.equal('{"robotCode":"fault-429"}', calls.after[1].body)
      assert.are.equal(429, calls.after[1].err.status)
      -- a closed client: the core's own argument error, nothing sent
      c:close()
      assert.are.same({ "after", "argument.closed" }, { f{ robotCode = "dingbot-ok", token = TOKEN } })
      assert.are.equal(1, #emulator.requests(emu))
    end)
  end)

  it("a request id is kept whole, then redacted and cut: no part of the token gets through", function()
    local c = core.new_client{}
    c:last()        -- request ids are kept from here on (an on_request hook asks first too)
    -- "x" * N, the token, " end": with N = 100 a cut at 127 bytes left
    -- the token's first 27 bytes; N = 3000 passes any small buffer
    for _, n in ipairs{ 100, 3000 } do
      local ok, err = post(c, emu.url, "fault-echo-rid-" .. n)
      assert.is_nil(ok)
      assert.are.equal("param.illegal", err.code)
      local seq, status, rid = c:last()
      assert.are.equal(400, status)
      assert.is_true(seq >= 1)
      -- last() caps like the mapping will (the mapping's cap is dt_map's)
      assert.is_true(#rid <= 127 + 3, rid)
      for _, s in ipairs{ rid, err.request_id } do
        assert.are.equal(string.rep("x", 100), s:sub(1, 100))
        assert.is_nil(reachable.leak(s, TOKEN), "token fragment in " .. s)
        for _, v in ipairs(reachable.strings(err)) do
          assert.is_nil(v:find(TOKEN:sub(1, 8), 1, true))
        end
      end
    end
    -- with the token whole inside the cap, the redaction shows
    local ok, err = post(c, emu.url, "fault-echo-rid-10")
    assert.is_nil(ok)
    local _, _, rid = c:last()
    assert.are.equal(string.rep("x", 10) .. "[redacted] end", rid)
    assert.are.equal(rid, err.request_id)
    c:close()
  end)

  it("a client's clear_plugins is the C closure where it may be, the Lua path where it may not", function()
    local function kind(c) return debug.getinfo(c.robot.clear_plugins, "S").what end
    local plain = dingtalk.new{ endpoint = emu.url }
    local hooked = dingtalk.new{ endpoint = emu.url, on_request = function() end }
    local managed = dingtalk.new{ endpoint = emu.url, app_key = "app-demo", app_secret = "appsecret-0123" }
    assert.are.same({ "C", "Lua", "Lua" }, { kind(plain), kind(hooked), kind(managed) })
    -- both give the same answers and send the same request, method call or not
    emulator.reset(emu)
    assert.is_true(plain.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    assert.is_true(hooked.robot:clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    assert.is_false(plain.robot:clear_plugins{ robotCode = "dingbot-false", token = TOKEN })
    local r = emulator.requests(emu)
    assert.are.equal(3, #r)
    assert.are.same({ r[1].body, r[1].headers["x-acs-dingtalk-access-token"] },
                    { r[2].body, r[2].headers["x-acs-dingtalk-access-token"] })
    for _, c in ipairs{ plain, hooked, managed } do c:close() end
  end)
end)

describe("the request head on the wire", function()
  local BODY = '{"robotCode":"dingbot-ua"}'
  local function head(port, ua, token, path)
    return "POST " .. (path or CLEAR) .. " HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\n"
      .. (ua and "User-Agent: " .. ua .. "\r\n" or "")
      .. (token and "x-acs-dingtalk-access-token: " .. token .. "\r\n" or "")
      .. "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: " .. #BODY .. "\r\n\r\n"
  end

  it("carries the User-Agent once, the default or the user_agent option, byte for byte", function()
    local heads, out, port = raw_heads(3, [[
      local dingtalk = require "dingtalk"
      for _, ua in ipairs{ false, "custom-agent/2.0 (spec; x)", "   " } do
        local c = dingtalk.new{ endpoint = ..., user_agent = ua or nil, retries = 0 }
        print(c.options.user_agent)
        print(c.robot.clear_plugins{ robotCode = "dingbot-ua", token = "]] .. TOKEN .. [[" })
        c:close()
      end
    ]])
    local default = out:match("^([^\n]*)\n")
    assert.matches("^lua%-dingtalk/" .. core._VERSION:gsub("%p", "%%%0") .. " %(Lua [%d.]+; libcurl/[%d.]+%)$", default)
    assert.are.equal(default .. "\ntrue\ncustom-agent/2.0 (spec; x)\ntrue\n   \ntrue\n", out)
    assert.are.same({ head(port, default, TOKEN), head(port, "custom-agent/2.0 (spec; x)", TOKEN),
                      head(port, "   ", TOKEN) }, heads)
  end)

  it("keeps it first on one client whatever the token: none, then one, then none", function()
    local heads, out, port = raw_heads(4, [[
      local core = require "dingtalk.core"
      local url = ...
      local c = core.new_client{ user_agent = "ua-b/1" }
      for _, t in ipairs{ "]] .. TOKEN .. [[", false, "tok-second-0123456789" } do
        io.write(tostring(select(2, core.post(c, url .. "/p", t or nil, ']] .. BODY .. [[', "result"))), " ")
      end
      c:close()
      c = core.new_client{}      -- no user_agent: no User-Agent at all
      io.write(tostring(select(2, core.post(c, url .. "/p", "tok-third-0123456789", ']] .. BODY .. [[', "result"))))
      c:close()
    ]])
    assert.are.equal("true true true true", out)
    assert.are.same({ head(port, "ua-b/1", TOKEN, "/p"), head(port, "ua-b/1", nil, "/p"),
                      head(port, "ua-b/1", "tok-second-0123456789", "/p"),
                      head(port, nil, "tok-third-0123456789", "/p") }, heads)
  end)

  it("is the same in a batch (core.multi): each slot's head byte for byte", function()
    local heads, out, port = raw_heads(3, [[
      local core = require "dingtalk.core"
      local url = ...
      local m = assert(core.multi({ user_agent = "ua-m/1" }, 2))
      assert(m:start(1, url .. "/p", "]] .. TOKEN .. [[", ']] .. BODY .. [['))
      assert(m:start(2, url .. "/p", nil, ']] .. BODY .. [['))
      local got = {}
      while #got < 2 do
        for _, r in ipairs(m:wait(1000)) do got[#got + 1] = tostring(r.ok) end
      end
      assert(m:start(1, url .. "/p", "tok-again-0123456789", ']] .. BODY .. [['))
      while #got < 3 do
        for _, r in ipairs(m:wait(1000)) do got[#got + 1] = tostring(r.ok) end
      end
      m:close()
      io.write(table.concat(got, " "))
    ]])
    assert.are.equal("true true true", out)
    table.sort(heads)   -- the first two in whichever order they connected
    local want = { head(port, "ua-m/1", TOKEN, "/p"), head(port, "ua-m/1", nil, "/p"),
                   head(port, "ua-m/1", "tok-again-0123456789", "/p") }
    table.sort(want)
    assert.are.same(want, heads)
  end)

  it("asks for no 100 Continue: a large body goes at once, small ones as ever (one client)", function()
    -- libcurl adds "Expect: 100-continue" above 1 MiB and then waits up
    -- to a second; the raw server never answers 100
    local big = '{"robotCode":"' .. ("x"):rep(1100 * 1024) .. '"}'
    local bigfile = os.tmpname()
    local f = assert(io.open(bigfile, "w")); f:write(big); f:close()
    local heads, out, port = raw_heads(3, [[
      local core = require "dingtalk.core"
      local url = ...
      local f = assert(io.open(os.getenv("BIG"))); local big = f:read("*a"); f:close()
      local c = core.new_client{ user_agent = "ua-e/1" }
      for _, b in ipairs{ ']] .. BODY .. [[', big, ']] .. BODY .. [[' } do
        io.write(tostring(select(2, core.post(c, url .. "/p", "]] .. TOKEN .. [[", b, "result"))), " ")
      end
      c:close()
    ]], "BIG=" .. bigfile)
    os.remove(bigfile)
    assert.are.equal("true true true ", out)
    assert.are.equal(head(port, "ua-e/1", TOKEN, "/p"), heads[1])
    assert.are.equal((head(port, "ua-e/1", TOKEN, "/p"):gsub("Content%-Length: %d+", "Content-Length: " .. #big)),
                     heads[2])
    assert.are.equal(head(port, "ua-e/1", TOKEN, "/p"), heads[3])
  end)

  it("gives a CONNECT to a proxy the User-Agent, and nothing else of the request", function()
    local heads, out = raw_heads(1, [[
      local dingtalk = require "dingtalk"
      local c = dingtalk.new{ endpoint = "https://127.0.0.1:1", proxy = ..., retries = 0, user_agent = "ua-c/1" }
      local ok, e = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ua", token = "]] .. TOKEN .. [[" })
      io.write(tostring(ok), " ", e.code)
    ]])
    assert.matches("^false transport%.", out)
    assert.are.same({ "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUser-Agent: ua-c/1\r\n"
                      .. "Proxy-Connection: Keep-Alive\r\n\r\n" }, heads)
  end)

  it("sends a plain-http request through a proxy (insecure_http) with the User-Agent once", function()
    local heads, out = raw_heads(1, [[
      local dingtalk = require "dingtalk"
      local c = dingtalk.new{ endpoint = "http://127.0.0.1:1", proxy = ..., insecure_http = true,
                              retries = 0, user_agent = "ua-d/1" }
      io.write(tostring(c.robot.clear_plugins{ robotCode = "dingbot-ua", token = "]] .. TOKEN .. [[" }))
    ]])
    assert.are.equal("true", out)
    -- as with CURLOPT_USERAGENT: libcurl's Proxy-Connection after it
    assert.are.same({ "POST http://127.0.0.1:1" .. CLEAR .. " HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
                      .. "User-Agent: ua-d/1\r\nProxy-Connection: Keep-Alive\r\n"
                      .. "x-acs-dingtalk-access-token: " .. TOKEN .. "\r\nContent-Type: application/json\r\n"
                      .. "Accept: application/json\r\nContent-Length: " .. #BODY .. "\r\n\r\n" }, heads)
  end)
end)

-- The proxy variables as libcurl reads them; the core reads them once, when
-- the client is made. The proxy is the raw server; "direct" means the call
-- went to the endpoint itself (a closed port) and the proxy saw nothing.
describe("proxies from the environment", function()
  local DEAD = "http://127.0.0.1:9"
  local CALL = [[
    local dingtalk = require "dingtalk"
    local c = dingtalk.new{ endpoint = os.getenv("EP"), insecure_http = os.getenv("INSECURE") and true,
                            proxy = os.getenv("OPT_PROXY"), retries = 0, timeout = 3000 }
    local ok, e = pcall(c.robot.clear_plugins, { robotCode = "dingbot-env", token = "tok-env-0123456789" })
    io.write(tostring(ok), " ", type(e) == "table" and tostring(e.code) or tostring(e))
  ]]
  local HTTPS, HTTP = "https://127.0.0.1:1", "http://127.0.0.1:1"
  local CONNECT = "^CONNECT 127%.0%.0%.1:1 HTTP/1%.1\r\n"
  local FORWARD = "^POST http://127%.0%.0%.1:1/v1%.0/robot/plugins/clear HTTP/1%.1\r\n"
  -- { name, endpoint, variables (P: the proxy), expected first line or "direct" }
  local cases = {
    { "https_proxy", HTTPS, "https_proxy=P", CONNECT },
    { "HTTPS_PROXY", HTTPS, "HTTPS_PROXY=P", CONNECT },
    { "all_proxy", HTTPS, "all_proxy=P", CONNECT },
    { "ALL_PROXY", HTTPS, "ALL_PROXY=P", CONNECT },
    { "https_proxy before all_proxy", HTTPS, "https_proxy=P all_proxy=" .. DEAD .. " ALL_PROXY=" .. DEAD, CONNECT },
    { "HTTPS_PROXY before ALL_PROXY", HTTPS, "HTTPS_PROXY=P ALL_PROXY=" .. DEAD, CONNECT },
    { "an empty https_proxy is unset", HTTPS, "https_proxy= ALL_PROXY=P", CONNECT },
    { "http_proxy is not for https", HTTPS, "http_proxy=P", "direct" },
    { "no_proxy", HTTPS, "https_proxy=P no_proxy=127.0.0.1", "direct" },
    { "NO_PROXY", HTTPS, "https_proxy=P NO_PROXY=127.0.0.1", "direct" },
    { "no_proxy before NO_PROXY", HTTPS, "https_proxy=P no_proxy=example.com NO_PROXY=127.0.0.1", CONNECT },
    { "an empty no_proxy is unset", HTTPS, "https_proxy=P no_proxy= NO_PROXY=127.0.0.1", "direct" },
    { "no_proxy also bounds the proxy option", HTTPS, "OPT_PROXY=P no_proxy=127.0.0.1", "direct" },
    { "the proxy option wins over the variables", HTTPS, "OPT_PROXY=P https_proxy=" .. DEAD, CONNECT },
    { "http_proxy with insecure_http", HTTP, "INSECURE=1 http_proxy=P", FORWARD },
    { "HTTP_PROXY is never read", HTTP, "INSECURE=1 HTTP_PROXY=P", "direct" },
    { "ALL_PROXY for plain http with insecure_http", HTTP, "INSECURE=1 ALL_PROXY=P", FORWARD },
    { "plain http to loopback: no proxy at all", HTTP, "http_proxy=P ALL_PROXY=P all_proxy=P", "direct" },
  }
  for _, case in ipairs(cases) do
    local name, ep, vars, want = case[1], case[2], case[3], case[4]
    it(name, function()
      local heads, out = raw_heads(want == "direct" and 0 or 1, CALL,
                                   "EP=" .. ep .. " " .. vars:gsub("=P", "=http://127.0.0.1:$PROXY_PORT"))
      if want == "direct" then
        assert.are.same({}, heads)
        assert.are.equal("false transport.connect", out)
      else
        assert.are.equal(1, #heads, out)
        assert.matches(want, heads[1])
        -- the proxy refuses a CONNECT and answers a forwarded request
        assert.matches(want == FORWARD and "^true true$" or "^false transport%.", out)
      end
    end)
  end

  -- setenv() after the client is made: LuaJIT's FFI has it, so the child
  -- is LuaJIT (with its own build of the core) whatever runs the suite.
  local JIT_CORE = "./build/luajit/dingtalk/core.so"
  local has_jit = io.open(JIT_CORE) and os.execute("command -v luajit >/dev/null 2>&1")
  local it_jit = has_jit and it or pending
  it_jit("reads the variables when the client is made, not at each call", function()
    local heads, out = raw_heads(1, [[
      local ffi = require "ffi"
      ffi.cdef "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);"
      local dingtalk = require "dingtalk"
      local proxy = "http://127.0.0.1:" .. os.getenv("PROXY_PORT")
      local function call(c)
        local ok, e = pcall(c.robot.clear_plugins, { robotCode = "dingbot-env", token = "tok-env-0123456789" })
        io.write(tostring(ok), " ", type(e) == "table" and tostring(e.code) or tostring(e), "; ")
      end
      -- made without a proxy variable: a later one does not apply
      local direct = dingtalk.new{ endpoint = "https://127.0.0.1:1", retries = 0, timeout = 3000 }
      ffi.C.setenv("https_proxy", proxy, 1)
      call(direct)
      -- made with one: it applies after the variable is gone
      local via = dingtalk.new{ endpoint = "https://127.0.0.1:1", retries = 0, timeout = 3000 }
      ffi.C.unsetenv("https_proxy")
      ffi.C.setenv("no_proxy", "*", 1)
      call(via)
    ]], "PROXY_PORT=$PROXY_PORT", "luajit", "./build/luajit/?.so;;")
    assert.matches("^false transport%.connect; false transport%.[%w_]+; $", out)
    assert.are.equal(1, #heads)
    assert.matches("^CONNECT 127%.0%.0%.1:1 HTTP/1%.1\r\n", heads[1])
  end)
end)

-- The core's own checks of what goes into a header line, read eight bytes
-- at a time: every byte value at every position, on either side of a word.
describe("header bytes the core checks", function()
  local BYTES = { 0, 0x0a, 0x0d, 0x1f, 0x20, 0x41, 0x7e, 0x7f, 0x80, 0xc3, 0xff }
  it("refuses a token with a control character anywhere, before any traffic", function()
    local c = core.new_client{ direct = true }
    for len = 1, 19 do
      for _, b in ipairs(BYTES) do
        for pos = 1, len do
          local t = ("a"):rep(pos - 1) .. string.char(b) .. ("b"):rep(len - pos)
          local ok, e = core.post(c, "http://127.0.0.1:9" .. CLEAR, t, "{}", "result")
          assert.is_nil(ok)
          -- port 9 is closed: a token let through fails to connect
          assert.are.equal((b < 0x20 or b == 0x7f) and "argument.control_char" or "transport.connect", e.code,
                           ("byte %d at %d of %d"):format(b, pos, len))
        end
      end
    end
    c:close()
  end)

  it("core.printable: 1..max bytes of 0x20-0x7E, nothing else", function()
    for len = 1, 19 do
      for b = 0, 255 do
        for pos = 1, len do
          local s = ("a"):rep(pos - 1) .. string.char(b) .. ("b"):rep(len - pos)
          assert.are.equal(b >= 0x20 and b <= 0x7e, core.printable(s, 19), ("byte %d at %d of %d"):format(b, pos, len))
        end
      end
    end
    assert.is_false(core.printable("", 19))
    assert.is_false(core.printable(("a"):rep(20), 19))
  end)
end)
