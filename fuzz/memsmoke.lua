-- Memory smoke driver: every path of the C core once or more, for memcheck
-- (make check-memory) and ASan (make check-asan), independent of the spec
-- suite. Fails (exit 1) when a result is not what the core promises.
-- usage: lua5.4 fuzz/memsmoke.lua [build dir holding dingtalk/core.so]
local build = arg[1] or "build/lua5.4"
package.cpath = "./" .. build .. "/?.so;" .. package.cpath
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path

local core = require "dingtalk.core"
local dingtalk = require "dingtalk"

local ROUNDS = tonumber(os.getenv("MEMSMOKE_ROUNDS") or "") or 3
local TOKEN = "memsmoke-token-0123456789"
local RID = "5A2E1F7C-0B6D-4C1E-9F3A-1B2C3D4E5F60"
local failures, checks = 0, 0

local function check(cond, what)
  checks = checks + 1
  if not cond then
    failures = failures + 1
    io.stderr:write("memsmoke: FAILED: ", what, "\n")
  end
end

local function is_error(e, kind, code)
  return type(e) == "table" and core.is_error(e) and e.kind == kind
     and (code == nil or e.code == code) and type(tostring(e)) == "string"
end

-- core.map: every shape -----------------------------------------------------

local MAP = {
  -- status, headers, body, field, secret -> expect ("ok" or kind), code
  { 200, {}, '{"result":true}', "result", nil, "ok" },
  { 200, {}, '{"result":false}', "result", TOKEN, "ok" },
  { 204, {}, '{"a":[1,2,{"b":null}]}', nil, nil, "ok" },
  { 200, {}, "", "result", nil, "protocol", "protocol.empty" },
  { 200, {}, " \r\n\t", "result", nil, "protocol", "protocol.empty" },
  { 200, {}, "<html>", "result", nil, "protocol", "protocol.not_json" },
  { 200, {}, "[1,2]", "result", nil, "protocol", "protocol.not_object" },
  { 200, {}, "1", "result", nil, "protocol", "protocol.not_object" },
  { 200, {}, "null", nil, nil, "protocol", "protocol.not_object" },
  { 200, {}, '"' .. TOKEN .. '"', "result", TOKEN, "protocol", "protocol.not_object" },
  { 200, {}, "{}", "result", nil, "protocol", "protocol.no_result" },
  { 200, { ["x-acs-request-id"] = RID }, '{"result":"yes"}', "result", nil,
    "protocol", "protocol.bad_result" },
  { 400, { ["x-acs-request-id"] = RID },
    '{"code":"param.illegal","message":"Parameter error","requestid":"' .. RID .. '"}',
    "result", TOKEN, "api", "param.illegal" },
  { 400, {}, '{"Code":"invalidRequest.robotIsStop","Message":"stopped","RequestId":42}', "result", nil, "api" },
  { 400, {}, '{"code":"x","requestId":"r1"}', nil, nil, "api", "x" },
  { 401, { ["x-acs-trace-id"] = "t\1\2" },
    '{"code":"InvalidAuthentication","message":"token ' .. TOKEN .. ' bad\r\n\255"}',
    "result", TOKEN, "api" },
  { 403, { ["retry-after"] = "7" }, '{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"qps"}',
    "result", nil, "api" },
  { 403, {}, '{"code":"Forbidden.AccessDenied.AccessTokenPermissionDenied","message":"m",'
    .. '"accessdenieddetail":{"requiredScopes":["a","b"]}}', "result", nil, "api" },
  { 500, {}, '{"code":"system.error","message":"System error"}', "result", nil, "api", "system.error" },
  { 502, { ["retry-after"] = "Wed, 21 Oct 2015 07:28:00 GMT" },
    "<html>" .. string.rep("bad gateway ", 200) .. "</html>", "result", nil, "http", "http.502" },
  { 429, { ["retry-after"] = "30" }, "", "result", nil, "http", "http.429" },
  { 302, {}, "moved " .. TOKEN, "result", TOKEN, "http", "http.302" },
  { 404, {}, '{"message":"no code"}', "result", nil, "http", "http.404" },
  { 400, {}, string.rep("[", 2000) .. string.rep("]", 2000), "result", nil, "http", "http.400" },
  { 400, {}, '{"code":"' .. string.rep("\228\184\173", 400) .. '","message":"\237\160\128\192\175"}',
    "result", nil, "api" },
}

for _ = 1, ROUNDS do
  for i, c in ipairs(MAP) do
    local ok, res = core.map(c[1], c[2], c[3], c[4], c[5])
    if c[6] == "ok" then
      check(ok == true and res ~= nil, "map case " .. i .. " succeeds")
    else
      check(ok == nil and is_error(res, c[6], c[7]), "map case " .. i .. " gives a " .. c[6] .. " error")
      if c[5] and res then
        for k, v in pairs(res) do
          check(type(v) ~= "string" or not v:find(c[5], 1, true), "map case " .. i .. " redacts " .. k)
        end
      end
    end
  end
  -- redaction before the caps, both secrets, the header path (issue 10)
  local APP = "memsmoke-app-secret-ABCDEFGHIJ-0123456789"
  for n = 40, 520, 37 do
    local text = ("x"):rep(n) .. TOKEN:sub(3) .. APP:sub(1, 20) .. " end"
    local ok, res = core.map(400, { ["x-acs-trace-id"] = text, ["retry-after"] = ("9"):rep(n) },
      '{"code":"' .. text .. '","message":"' .. text .. '","accessdenieddetail":{"' .. text .. '":["'
      .. text .. '"]}}', nil, TOKEN, APP)
    check(ok == nil and is_error(res, "api") and res.retry_after == 2147483647, "straddle " .. n)
    check(not tostring(res):find(TOKEN:sub(3, 10), 1, true), "straddle " .. n .. " redacts")
    ok, res = core.map(502, { ["x-acs-request-id"] = text }, text, nil, TOKEN, APP)
    check(ok == nil and is_error(res, "http") and #res.request_id <= 127, "straddle html " .. n)
    check(core.redact(text, TOKEN, APP) == ("x"):rep(n) .. "[redacted] end", "core.redact " .. n)
  end
  local big = TOKEN:rep(4096)
  local ok, res = core.map(502, { ["x-acs-request-id"] = big }, big, nil, TOKEN, ("k"):rep(1025))
  check(ok == nil and res.excerpt == "[redacted]" and res.request_id == "[redacted]", "too long a secret")
  ok, res = core.map(400, {}, '{"code":40014,"message":"\\u0085\\u2028\\u202e","requestid":12345}', nil, TOKEN)
  check(ok == nil and res.code == "40014" and res.message == "   " and res.request_id == "12345", "numeric code")
  ok, res = core.map(302, {}, '{"code":"param.illegal"}')
  check(ok == nil and is_error(res, "http", "http.302"), "3xx with a code")
  check(core.redact(("a"):rep(65536), ("a"):rep(1024)) == "[redacted]", "core.redact of a long run")
  check(core.redact(5, TOKEN) == 5, "core.redact of a number")
  -- argument errors raise through lua_error: nothing may leak on the way
  check(not pcall(core.map, 99, {}, ""), "status 99 raises")
  check(not pcall(core.map, 0 / 0, {}, ""), "status NaN raises")
  check(not pcall(core.map, 200, nil, ""), "no headers raises")
  check(not pcall(core.map, 200, {}, nil), "no body raises")
  check(not pcall(core.map, 200, {}, "{}", {}), "a table field raises")
  local e = core.error{ kind = "x", code = "c", message = "m", status = 400, request_id = "r", attempts = 3 }
  check(core.is_error(e) and tostring(e):find("(3 attempts)", 1, true), "core.error")
  check(not core.is_error({}) and not core.is_error(nil), "core.is_error")
end

-- clients against a closed port ---------------------------------------------

for _ = 1, ROUNDS do
  local c = assert(core.new_client{ timeout = 2000, connect_timeout = 1000, user_agent = "memsmoke" })
  local ok, err = c:post("http://127.0.0.1:1/v1.0/robot/plugins/clear", TOKEN, '{"robotCode":"x"}', "result")
  check(ok == nil and is_error(err, "transport", "transport.connect"), "closed port: transport.connect")
  ok, err = c:post("http://127.0.0.1:1/", "", "{}")
  check(ok == nil and is_error(err, "argument", "argument.token"), "empty token")
  ok, err = c:post("http://127.0.0.1:1/", "a\r\nb", "{}")
  check(ok == nil and is_error(err, "argument", "argument.control_char"), "CRLF token")
  ok, err = c:post("http://127.0.0.1:1/", string.rep("t", 1025), "{}")
  check(ok == nil and is_error(err, "argument", "argument.token"), "long token")
  ok, err = c:post("ftp://127.0.0.1:1/", TOKEN, "{}")
  check(ok == nil and is_error(err, "transport"), "ftp refused")
  check(not pcall(c.post, c, nil, TOKEN, "{}"), "no url raises")
  check(type(tostring(c)) == "string", "tostring(client)")
  c:close()
  c:close()
  ok, err = c:post("http://127.0.0.1:1/", TOKEN, "{}")
  check(ok == nil and is_error(err, "argument", "argument.closed"), "closed client")
  -- one left open for __gc, and bad options raising inside new_client
  core.new_client{ cafile = "/nonexistent", proxy = "http://127.0.0.1:1" }
  check(not pcall(core.new_client, { timeout = -1 }), "negative timeout raises")
  check(not pcall(core.new_client, { proxy = 1 }), "numeric proxy raises")
  -- the Lua layer on top
  local d = dingtalk.new{ endpoint = "http://127.0.0.1:1", timeout = 2000 }
  local okc, e = pcall(d.robot.clear_plugins, { robotCode = "ding1", token = TOKEN })
  check(not okc and is_error(e, "transport", "transport.connect"), "clear_plugins: transport error raised")
  d:close()
  collectgarbage()
end

-- clients against a canned local server (child process) -------------------

local srv = io.popen("lua5.4 fuzz/memsmoke_server.lua", "r")
local port = srv and tonumber((srv:read("*l") or ""):match("^port (%d+)"))
if not port then
  check(false, "the canned server did not start (lua-socket for lua5.4 missing?)")
else
  local base = "http://127.0.0.1:" .. port .. "/v1.0/"
  local EXPECT = {
    ok = "ok", ["false"] = "ok", scalar = "protocol", empty = "protocol", api = "api",
    secret = "api", qps = "api", denied = "api", html = "http", redirect = "http",
    big = "ok", continue = "ok",
  }
  local names = {}
  for name in pairs(EXPECT) do names[#names + 1] = name end
  table.sort(names)
  for _ = 1, ROUNDS do
    local c = assert(core.new_client{ timeout = 20000, connect_timeout = 10000 })
    for _, name in ipairs(names) do
      local ok, res = c:post(base .. name, TOKEN, '{"robotCode":"x"}', "result")
      if EXPECT[name] == "ok" then
        check(ok == true and type(res) == "boolean", "server " .. name .. " succeeds")
      else
        check(ok == nil and is_error(res, EXPECT[name]), "server " .. name .. " gives " .. EXPECT[name])
        for k, v in pairs(res or {}) do
          check(type(v) ~= "string" or not v:find(TOKEN, 1, true), "server " .. name .. " redacts " .. k)
        end
      end
    end
    -- max_body: the write callback refuses the rest
    local small = assert(core.new_client{ timeout = 20000, max_body = 100 })
    local ok, err = small:post(base .. "big", TOKEN, "{}", "result")
    check(ok == nil and is_error(err, "transport", "transport.too_large"), "max_body: transport.too_large")
    small:close()
    -- left to __gc after a big answer
    c = nil -- luacheck: ignore
    collectgarbage()
  end
  -- finalizers that close the client, or call it, while post() is pushing
  -- its results (GC with pause 0, so they run inside the call)
  collectgarbage("incremental", 0, 1000)
  local nested = 0
  for i = 1, 300 do
    local c = assert(core.new_client{ timeout = 20000 })
    for _ = 1, i % 7 do
      setmetatable({}, { __gc = function()
        if i % 2 == 0 then c:close() return end
        local ok, e = c:post(base .. "ok", TOKEN, "{}")
        if not ok and e.code == "argument.busy" then nested = nested + 1 end
      end })
    end
    local ok, res = c:post(base .. (i % 3 == 0 and "html" or "api"), TOKEN, "{}", "result")
    check(ok == nil and type(res) == "table" and is_error(res, res.kind), "finalizer round " .. i .. " gives an error")
  end
  collectgarbage("incremental", 200, 100)
  collectgarbage()
  io.stdout:write("memsmoke: ", nested, " nested calls refused as argument.busy\n")
  local c = assert(core.new_client{ timeout = 5000 })
  c:post(base .. "quit", TOKEN, "{}")
  c:close()
  srv:close()
end

collectgarbage()
print(("memsmoke: %d checks, %d failed"):format(checks, failures))
os.exit(failures == 0 and 0 or 1, true)
