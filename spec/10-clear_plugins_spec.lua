-- clear_plugins end to end: the module over libcurl against the emulator
-- (a real nginx on 127.0.0.1). Each case checks what the server received
-- and what the caller got, field by field.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local scenarios = require "spec.helpers.scenarios"
local dingtalk = require "dingtalk"

local TOKEN = scenarios.TOKEN

local function merge(a, b)
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

describe("robot.clear_plugins", function()
  local emu, client

  setup(function()
    emu = emulator.start()
    client = dingtalk.new(merge(scenarios.client_options, { endpoint = emu.url }))
  end)

  teardown(function()
    if client then client:close() end
    if emu then emulator.stop(emu) end
  end)

  before_each(function() emulator.reset(emu) end)

  local function the_request()
    local reqs = emulator.requests(emu)
    assert.are.equal(1, #reqs, "the server should have seen exactly one request")
    return reqs[1]
  end

  local function assert_sent(req, code, token)
    assert.are.equal("POST", req.method)
    assert.are.equal("/v1.0/robot/plugins/clear", req.uri)
    assert.are.equal(token or TOKEN, req.headers["x-acs-dingtalk-access-token"])
    assert.are.equal("application/json", req.headers["content-type"])
    assert.are.equal("application/json", req.headers["accept"])
    assert.matches("^lua%-dingtalk/%d+%.%d+%.%d+ %(Lua", req.headers["user-agent"])
    assert.is_nil(req.headers["expect"])
    -- exactly one field, the robot code
    assert.are.same({ robotCode = code }, cjson.decode(req.body))
  end

  for _, sc in ipairs(scenarios.list) do
    it(sc.name .. " (" .. sc.robotCode .. ")", function()
      local ok, res = pcall(client.robot.clear_plugins,
                            { robotCode = sc.robotCode, token = sc.token or TOKEN })
      assert_sent(the_request(), sc.robotCode, sc.token)
      if sc.err == nil then
        assert.is_true(ok, tostring(res))
        assert.are.equal(sc.result, res)
        return
      end
      assert.is_false(ok, "expected an error")
      assert.are.equal("table", type(res), "errors are tables, not strings")
      assert.is_true(dingtalk.is_error(res))
      local e = sc.err
      assert.are.equal(e.kind, res.kind)
      assert.are.equal(e.code, res.code)
      assert.are.equal(e.status, res.status)
      assert.are.equal(e.retryable, res.retryable)
      assert.are.equal("string", type(res.message))
      assert.is_true(#res.message > 0)
      if e.message then assert.are.equal(e.message, res.message) end
      if e.message_match then assert.matches(e.message_match, res.message) end
      if e.request_id then
        assert.are.equal("string", type(res.request_id))
        assert.matches("^[%w%-]+$", res.request_id)
      end
      if e.excerpt then assert.matches(e.excerpt, res.excerpt) end
      if e.retry_after then assert.are.equal(e.retry_after, res.retry_after) end
      if e.accessdenieddetail then
        assert.are.equal("table", type(res.accessdenieddetail))
        assert.are.equal("Robot.SingleChat.ReadWrite", res.accessdenieddetail.accessCode)
      end
      if e.kind == "transport" then assert.is_nil(res.status) end
    end)
  end

  it("keeps the platform's request id from the body", function()
    local ok, err = pcall(client.robot.clear_plugins, { robotCode = "dingbot-stopped", token = TOKEN })
    assert.is_false(ok)
    -- the emulator puts the same id in the body and the x-acs-request-id header
    assert.matches("^[%w%-]+$", err.request_id)
    assert.are.equal(err.request_id, err.request_id:upper())
  end)

  it("prints one readable line per error", function()
    local _, err = pcall(client.robot.clear_plugins, { robotCode = "dingbot-nobody", token = TOKEN })
    local line = tostring(err)
    assert.are.equal("dingtalk: invalidRequest.robotNotExist (HTTP 400): "
      .. "The bot does not exist. Verify and add it again [request " .. err.request_id .. "]", line)
    local _, terr = pcall(client.robot.clear_plugins, { robotCode = "fault-close-mid-body", token = TOKEN })
    assert.matches("^dingtalk: transport%.closed: ", tostring(terr))
    assert.is_nil(tostring(terr):find("\n"))
  end)

  it("a slow answer fails at the timeout, not later", function()
    local t0 = require("socket").gettime()
    local ok, err = pcall(client.robot.clear_plugins, { robotCode = "fault-slow-3000", token = TOKEN })
    local elapsed = require("socket").gettime() - t0
    assert.is_false(ok)
    assert.are.equal("transport.timeout", err.code)
    assert.is_true(elapsed >= 0.7 and elapsed < 0.8 + 0.5, "took " .. elapsed .. " s")
  end)

  it("works through the client's dot and colon forms and the module-level robot", function()
    assert.is_true(client.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    assert.is_true(client.robot:clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    dingtalk.configure{ endpoint = emu.url }
    assert.is_true(dingtalk.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    assert.are.equal(3, #emulator.requests(emu))
  end)

  it("talks TLS with verification: cafile trusted, no CA and wrong names refused", function()
    local good = dingtalk.new{ endpoint = emu.tls_url, cafile = emu.cafile }
    assert.is_true(good.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    local by_name = dingtalk.new{ endpoint = emu.tls_url_localhost, cafile = emu.cafile }
    assert.is_true(by_name.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    assert.are.equal("https", emulator.requests(emu)[1].scheme)
    emulator.reset(emu)
    local cases = {
      { endpoint = emu.tls_url },                                        -- system CAs only
      { endpoint = emu.tls_url, cafile = emu.other_cafile },             -- an unrelated CA
      { endpoint = emu.tls_url_mismatch, cafile = emu.cafile },          -- name not on the cert
    }
    for _, opts in ipairs(cases) do
      local c = dingtalk.new(opts)
      local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN })
      assert.is_false(ok)
      assert.are.equal("transport", err.kind)
      assert.are.equal("transport.tls", err.code, tostring(err))
      assert.is_false(err.retryable)
      c:close()
    end
    -- the handshake failed before any request: the token was never sent
    assert.are.equal(0, #emulator.requests(emu))
    good:close(); by_name:close()
  end)

  it("reuses one connection for consecutive calls", function()
    for _ = 1, 5 do
      assert.is_true(client.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    end
    local reqs = emulator.requests(emu)
    assert.are.equal(5, #reqs)
    for i = 2, 5 do assert.are.equal(reqs[1].connection, reqs[i].connection) end
  end)

  it("a connection refused is a retryable transport error with no status", function()
    local c = dingtalk.new{ endpoint = "http://127.0.0.1:1", timeout = 1000 }
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "transport", "transport.connect", true },
                    { err.kind, err.code, err.retryable })
    assert.is_nil(err.status)
    c:close()
  end)
end)
