-- The per-IP block (shared/api/rate-limits.md): past 10,000 calls per 20 s
-- from one address the platform answers, for minutes, not with its usual
-- error but with a bare verdict {"status":1111,"wait":N,"source":...,
-- "punish":"deny",...}, HTTP status unconfirmed. Every transport maps it to
-- its own code, http.ip_blocked, retryable after the N minutes it names.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local leak = require("spec.helpers.reachable").leak
local core = require "dingtalk.core"
local dingtalk = require "dingtalk"

local TOKEN = "tok-ipblock-Rw8Kd3Zq-5c1e9a7f-Xn2"

local function verdict(t)
  local v = { status = 1111, wait = 5, source = "x5", punish = "deny",
              uuid = "6F2E4D1A-0B3C-4E5F-8A9B-C0D1E2F3A4B5" }
  for k, x in pairs(t or {}) do
    if x == "nil" then v[k] = nil else v[k] = x end
  end
  return cjson.encode(v)
end

local function map(status, body, headers, field, secret)
  return core.map(status, headers or {}, body, field, TOKEN, secret)
end

describe("the per-IP block", function()
  it("maps to http.ip_blocked, retryable, retry_after = wait x 60 s, whatever the HTTP status", function()
    for _, status in ipairs{ 403, 200, 429, 503, 302, 418 } do
      for _, field in ipairs{ "result", false } do
        local ok, err = map(status, verdict(), nil, field or nil)
        assert.is_nil(ok, status)
        assert.is_true(core.is_error(err))
        assert.are.equal("http", err.kind)
        assert.are.equal("http.ip_blocked", err.code)
        assert.are.equal(status, err.status)
        assert.is_true(err.retryable)
        assert.are.equal(300, err.retry_after)
        assert.matches("IP address", err.message)
        assert.matches("300 s", err.message)
        assert.matches('"punish":"deny"', err.excerpt)
        -- no request id header: the verdict's uuid
        assert.are.equal("6F2E4D1A-0B3C-4E5F-8A9B-C0D1E2F3A4B5", err.request_id)
      end
    end
  end)

  it("takes the block's length from wait (minutes); 5 minutes when it says nothing usable", function()
    local cases = {
      { 2, 120 }, { 1, 60 }, { 30, 1800 }, { 0.5, 30 }, { "3", 180 },
      { "nil", 300 }, { 0, 300 }, { -4, 300 }, { "soon", 300 }, { true, 300 },
      { 1e300, 2147483647 },
    }
    for _, c in ipairs(cases) do
      local _, err = map(403, verdict{ wait = c[1] })
      assert.are.equal("http.ip_blocked", err.code, tostring(c[1]))
      assert.are.equal(c[2], err.retry_after, tostring(c[1]))
    end
    -- the verdict's length wins over a Retry-After header
    local _, err = map(429, verdict{ wait = 1 }, { ["retry-after"] = "7" })
    assert.are.equal(60, err.retry_after)
  end)

  it("keeps the header request id when there is one; redacts the secrets", function()
    local _, err = map(403, verdict{ source = "seen " .. TOKEN }, { ["x-acs-request-id"] = "ABC-123" })
    assert.are.equal("ABC-123", err.request_id)
    assert.is_nil(leak(err, TOKEN))
    local secret = "AppSecret-Lk29Xq-Vv83Mp-0Zt"
    _, err = map(403, verdict{ uuid = "u-" .. secret }, nil, "result", secret)
    assert.is_nil(leak(err, secret))
    assert.matches("%[redacted%]", err.request_id)
  end)

  it("is only that shape: status 1111 with a punish field", function()
    -- no punish: a bare 403
    local _, err = map(403, verdict{ punish = "nil" })
    assert.are.equal("http.403", err.code)
    -- another status
    _, err = map(403, verdict{ status = 1112 })
    assert.are.equal("http.403", err.code)
    -- a 2xx without it is the usual contract
    assert.are.same({ true, true }, { map(200, '{"result":true,"status":1111}', nil, "result") })
    _, err = map(200, '{"status":1111}', nil, "result")
    assert.are.equal("protocol.no_result", err.code)
    -- a platform error keeps its code
    _, err = map(403, '{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"m"}')
    assert.are.equal("Forbidden.AccessDenied.QpsLimitForApi", err.code)
    -- a 3xx with another JSON body is still a refused redirect
    _, err = map(302, '{"code":"x","message":"y"}')
    assert.are.equal("http.302", err.code)
  end)

  describe("end to end (the emulator's fault-ip-block)", function()
    local emu
    setup(function() emu = emulator.start() end)
    teardown(function() if emu then emulator.stop(emu) end end)
    before_each(function() emulator.reset(emu) end)

    local function check(err)
      assert.are.equal("http", err.kind)
      assert.are.equal("http.ip_blocked", err.code)
      assert.are.equal(403, err.status)
      assert.is_true(err.retryable)
      assert.are.equal(300, err.retry_after)            -- "wait":5
      assert.matches("^[%w%-]+$", err.request_id)
    end

    it("through a client (libcurl, no retry)", function()
      local c = dingtalk.new{ endpoint = emu.url, retries = 0 }
      local ok, err = pcall(c.robot.clear_plugins, { robotCode = "fault-ip-block", token = TOKEN })
      assert.is_false(ok)
      check(err)
      local reqs = emulator.requests(emu)
      assert.are.equal(1, #reqs)
      assert.are.same({ robotCode = "fault-ip-block" }, cjson.decode(reqs[1].body))
      c:close()
    end)

    it("through core.multi", function()
      local m = assert(core.multi({}, 2))
      local url = emu.url .. "/v1.0/robot/plugins/clear"
      m:start(1, url, TOKEN, '{"robotCode":"fault-ip-block"}', "result")
      m:start(2, url, TOKEN, '{"robotCode":"dingbot-ok"}', "result")
      local got = {}
      while m:active() > 0 do
        for _, e in ipairs(m:wait(2000)) do got[e.slot] = e end
      end
      assert.is_false(got[1].ok)
      check(got[1].error)
      assert.is_true(got[2].result)
      m:close()
    end)
  end)
end)
