-- Bad input: each case is an "argument" error naming the field, raised
-- before any byte is sent (the emulator must have seen nothing).
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local TOKEN = "tok-args-spec-0123456789"

describe("arguments", function()
  local emu, client

  setup(function()
    emu = emulator.start()
    client = dingtalk.new{ endpoint = emu.url }
  end)
  teardown(function()
    if client then client:close() end
    if emu then emulator.stop(emu) end
  end)
  before_each(function() emulator.reset(emu) end)
  after_each(function()
    assert.are.equal(0, #emulator.requests(emu), "a bad argument must not reach the wire")
  end)

  local function refused(args, code, field, message_match)
    local ok, err = pcall(client.robot.clear_plugins, args)
    assert.is_false(ok, "expected an argument error")
    assert.are.equal("table", type(err))
    assert.is_true(dingtalk.is_error(err))
    assert.are.equal("argument", err.kind)
    assert.are.equal(code, err.code)
    assert.are.equal(field, err.field)
    assert.is_false(err.retryable)
    assert.is_nil(err.status)
    if message_match then assert.matches(message_match, err.message) end
    assert.matches("^dingtalk: " .. code:gsub("%.", "%%.") .. ": ", tostring(err))
    return err
  end

  local bad = {
    { "no table", nil, "argument.not_table", "(arguments)" },
    { "a string", "dingbot-ok", "argument.not_table", "(arguments)" },
    { "missing robotCode", { token = TOKEN }, "argument.missing", "robotCode" },
    { "missing token", { robotCode = "dingbot-ok" }, "argument.missing", "token" },
    { "empty robotCode", { robotCode = "", token = TOKEN }, "argument.empty", "robotCode" },
    { "empty token", { robotCode = "dingbot-ok", token = "" }, "argument.empty", "token" },
    { "numeric robotCode", { robotCode = 42, token = TOKEN }, "argument.type", "robotCode" },
    { "table token", { robotCode = "dingbot-ok", token = {} }, "argument.type", "token" },
    { "boolean token", { robotCode = "dingbot-ok", token = true }, "argument.type", "token" },
    { "over-long robotCode", { robotCode = ("x"):rep(257), token = TOKEN }, "argument.too_long", "robotCode" },
    { "over-long token", { robotCode = "dingbot-ok", token = ("t"):rep(1025) }, "argument.too_long", "token" },
    { "NUL in robotCode", { robotCode = "ding\0bot", token = TOKEN }, "argument.control_char", "robotCode" },
    { "CR/LF in token", { robotCode = "dingbot-ok", token = "abc\r\nX-Evil: 1" },
      "argument.control_char", "token" },
    { "LF in token", { robotCode = "dingbot-ok", token = "abc\n" }, "argument.control_char", "token" },
    { "tab in robotCode", { robotCode = "ding\tbot", token = TOKEN }, "argument.control_char", "robotCode" },
    { "DEL in token", { robotCode = "dingbot-ok", token = "abc\127" }, "argument.control_char", "token" },
    { "ESC in robotCode", { robotCode = "ding\27[31m", token = TOKEN }, "argument.control_char", "robotCode" },
    { "invalid UTF-8 robotCode", { robotCode = "ding\255bot", token = TOKEN }, "argument.utf8", "robotCode" },
    { "overlong UTF-8", { robotCode = "ding\192\175", token = TOKEN }, "argument.utf8", "robotCode" },
    { "UTF-8 surrogate", { robotCode = "ding\237\160\128", token = TOKEN }, "argument.utf8", "robotCode" },
    { "truncated UTF-8 token", { robotCode = "dingbot-ok", token = "abc\226\130" }, "argument.utf8", "token" },
    { "misspelt key", { robotcode = "dingbot-ok", token = TOKEN }, "argument.unknown_key", "robotcode",
      "did you mean robotCode%?" },
    { "extra key", { robotCode = "dingbot-ok", token = TOKEN, extra = 1 }, "argument.unknown_key", "extra" },
    { "array part", { "dingbot-ok", token = TOKEN }, "argument.unknown_key", "(number key)" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. case[1], function()
      refused(case[2], case[3], case[4], case[5])
    end)
  end

  it("never puts the value of a bad argument in the error", function()
    local secret = "tok-VALUE-must-not-leak-42"
    local err = refused({ robotCode = "dingbot-ok", token = secret .. "\n" }, "argument.control_char", "token")
    for k, v in pairs(err) do
      assert.is_nil(tostring(v):find(secret, 1, true), "field " .. k .. " leaks the token")
    end
    assert.is_nil(tostring(err):find(secret, 1, true))
  end)

  it("accepts valid UTF-8 robot codes", function()
    assert.is_true(client.robot.clear_plugins{ robotCode = "dingbot-ok", token = "中文-tok-ok" })
    emulator.reset(emu)
    local ok, err = pcall(client.robot.clear_plugins, { robotCode = "机器人-€-😀", token = TOKEN })
    assert.is_false(ok)
    assert.are.equal("invalidRequest.robotNotExist", err.code)   -- it reached the platform
    emulator.reset(emu)
  end)
end)

describe("client options", function()
  local function bad_option(opts, code, field)
    local ok, err = pcall(dingtalk.new, opts)
    assert.is_false(ok, "expected an argument error")
    assert.is_true(dingtalk.is_error(err))
    assert.are.same({ "argument", code, field }, { err.kind, err.code, err.field })
    return err
  end

  it("refuses bad timeouts", function()
    for _, v in ipairs({ -1, 0, 1.5, "100", 0/0, 2^31, true }) do
      bad_option({ timeout = v }, "argument.option", "timeout")
      bad_option({ connect_timeout = v }, "argument.option", "connect_timeout")
    end
  end)

  it("refuses endpoints that are not http(s) URLs", function()
    for _, v in ipairs({ "api.dingtalk.io", "ftp://api.dingtalk.io", "file:///etc/passwd", "https://",
                         "https://user:pw@api.dingtalk.io", "https://api.dingtalk.io:0",
                         "https://api.dingtalk.io:70000", "https://api.dingtalk.io/x?y=1",
                         "https://api.dingtalk.io/#f", "https://api dingtalk.io" }) do
      local err = bad_option({ endpoint = v }, "argument.endpoint", "endpoint")
      assert.is_string(err.message)
    end
    bad_option({ endpoint = 42 }, "argument.type", "endpoint")
  end)

  it("allows plain http only to loopback, unless insecure_http is set", function()
    for _, v in ipairs({ "http://api.dingtalk.io", "http://10.0.0.1:8080", "http://example.com" }) do
      bad_option({ endpoint = v }, "argument.insecure", "endpoint")
    end
    for _, v in ipairs({ "http://127.0.0.1:8080", "http://127.1.2.3", "http://localhost:1", "http://[::1]:9" }) do
      dingtalk.new{ endpoint = v }:close()
    end
    local c = dingtalk.new{ endpoint = "http://example.com", insecure_http = true }
    assert.are.equal("http://example.com", c.endpoint)
    c:close()
    bad_option({ endpoint = "http://example.com", insecure_http = "yes" }, "argument.option", "insecure_http")
  end)

  it("normalises the endpoint and defaults to the international platform", function()
    local c = dingtalk.new()
    assert.are.equal("https://api.dingtalk.io", c.endpoint)
    assert.are.equal(10000, c.options.timeout)
    assert.are.equal(5000, c.options.connect_timeout)
    assert.are.equal(1024 * 1024, c.options.max_body)
    c:close()
    c = dingtalk.new{ endpoint = "https://api.dingtalk.com/" }
    assert.are.equal("https://api.dingtalk.com", c.endpoint)
    c:close()
  end)

  it("refuses a cafile that cannot be read, and other bad options", function()
    bad_option({ cafile = "/nonexistent/ca.crt" }, "argument.option", "cafile")
    bad_option({ cafile = "" }, "argument.option", "cafile")
    bad_option({ proxy = 8080 }, "argument.option", "proxy")
    bad_option({ user_agent = "x\r\ny" }, "argument.option", "user_agent")
    bad_option({ max_body = 0 }, "argument.option", "max_body")
    bad_option({ max_body = "1M" }, "argument.option", "max_body")
    bad_option({ timeot = 100 }, "argument.unknown_key", "timeot")
    bad_option("https://api.dingtalk.io", "argument.not_table", "(arguments)")
  end)
end)

describe("the one-pass argument check (core.plain_args)", function()
  local core = require "dingtalk.core"
  local ALLOWED = { robotCode = true, token = true }
  local function plain(args)
    return core.plain_args(args, ALLOWED, "robotCode", 256, "token", 1024)
  end

  it("passes the usual call through", function()
    assert.are.same({ "dingbot-ok", "tok-1" }, { plain{ robotCode = "dingbot-ok", token = "tok-1" } })
  end)

  it("leaves everything else to the full checks", function()
    for _, args in ipairs{
      "x", {}, { robotCode = "a" }, { token = "t" }, { robotCode = "a", token = "t", x = 1 },
      { robotCode = "", token = "t" }, { robotCode = ("a"):rep(257), token = "t" },
      { robotCode = "a\n", token = "t" }, { robotCode = "a", token = "t\127" },
      { robotCode = "机器人", token = "t" }, { robotCode = 1, token = "t" }, { "a", robotCode = "a", token = "t" },
    } do
      assert.is_nil(plain(args))
    end
  end)
end)


describe("suggestions for a misspelt name", function()
  local check = require "dingtalk.check"

  local function refused(f, opts)
    local ok, err = pcall(f, opts)
    assert.is_false(ok)
    assert.is_true(dingtalk.is_error(err))
    return err
  end

  it("an option of dingtalk.new: slips, transpositions, case, - and _", function()
    for typo, want in pairs{ endpiont = "endpoint", timeot = "timeout", Endpoint = "endpoint",
                             connect_timout = "connect_timeout", ["insecure-http"] = "insecure_http",
                             appkey = "app_key", maxbody = "max_body", retires = "retries" } do
      local err = refused(dingtalk.new, { [typo] = "x" })
      assert.are.same({ "argument", "argument.unknown_key", typo }, { err.kind, err.code, err.field })
      assert.are.equal("dingtalk.new does not take " .. typo .. "; did you mean " .. want .. "?", err.message)
    end
  end)

  it("no suggestion when nothing is close", function()
    for _, name in ipairs{ "zzz", "robotCode", "colour", "x" } do
      local err = refused(dingtalk.new, { [name] = 1 })
      assert.are.equal("dingtalk.new does not take " .. name, err.message)
    end
  end)

  it("dingtalk.configure names itself, and keeps the default client it had", function()
    local err = refused(dingtalk.configure, { endpiont = "http://127.0.0.1:1" })
    assert.are.equal("dingtalk.configure does not take endpiont; did you mean endpoint?", err.message)
    err = refused(dingtalk.configure, "https://api.dingtalk.com")
    assert.matches("^dingtalk%.configure expects a table", err.message)
  end)

  it("call arguments too: robot_code, tokne", function()
    local c = dingtalk.new{ endpoint = "http://127.0.0.1:1" }
    for typo, want in pairs{ robot_code = "robotCode", ROBOTCODE = "robotCode", tokne = "token" } do
      local args = { robotCode = "dingbot-ok", token = "t" }
      args[want] = nil
      args[typo] = "x"
      local err = refused(c.robot.clear_plugins, args)
      assert.are.equal("clear_plugins does not take " .. typo .. "; did you mean " .. want .. "?", err.message)
    end
    c:close()
  end)

  it("check.suggest: the closest name, deterministic, nil when far", function()
    local known = { "robot-code", "robotCode", "token", "timeout", "retries" }
    assert.are.equal("robot-code", check.suggest("robot-code-", { "robot-code", "token" }))
    assert.are.equal("token", check.suggest("tokn", known))
    assert.are.equal("retries", check.suggest("retres", { retries = true, token = true }))
    assert.is_nil(check.suggest("abc", known))
    assert.is_nil(check.suggest("", known))
    assert.is_nil(check.suggest(("x"):rep(100), known))
    -- ties go to the first in byte order, whatever the table's order
    assert.are.equal("robot-code", check.suggest("robotcode", { "robotCode", "robot-code" }))
    assert.are.equal("robot-code", check.suggest("robotcode", { "robot-code", "robotCode" }))
  end)
end)


describe("an endpoint that carries the API's version", function()
  it("is refused before any traffic, with the endpoint to use instead", function()
    for ep, want in pairs{ ["https://api.dingtalk.com/v1.0"] = "https://api.dingtalk.com",
                           ["https://api.dingtalk.com/v1.0/"] = "https://api.dingtalk.com",
                           ["https://gw.example:8443/dingtalk/v1.0"] = "https://gw.example:8443/dingtalk",
                           ["http://127.0.0.1:1/v2.0"] = "http://127.0.0.1:1" } do
      local ok, err = pcall(dingtalk.new, { endpoint = ep })
      assert.is_false(ok, ep)
      assert.are.same({ "argument", "argument.endpoint", "endpoint" }, { err.kind, err.code, err.field })
      assert.matches("the module adds /v1%.0/%.%.%. itself; use " .. want:gsub("%p", "%%%0") .. "$", err.message)
    end
  end)

  it("a gateway's prefix stays allowed", function()
    local c = dingtalk.new{ endpoint = "https://gw.example/dingtalk/v1.0x/" }
    assert.are.equal("https://gw.example/dingtalk/v1.0x", c.endpoint)
    c:close()
    c = dingtalk.new{ endpoint = "https://gw.example/api/dingtalk" }
    assert.are.equal("https://gw.example/api/dingtalk", c.endpoint)
    c:close()
  end)
end)
