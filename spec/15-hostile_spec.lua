-- Hostile or broken servers: no call outlives its timeout by more than a
-- small margin, response size is capped, redirects are refused.
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local TOKEN = "tok-hostile-0123456789"
-- Seconds a call may run past its timeout. Slow instrumented runs
-- (valgrind, sanitizers) set SPEC_TIME_SLACK_MS higher.
local SLACK = (tonumber(os.getenv("SPEC_TIME_SLACK_MS")) or 150) / 1000

describe("hostile servers", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function timed(client, code)
    local t0 = socket.gettime()
    local ok, err = pcall(client.robot.clear_plugins, { robotCode = code, token = TOKEN })
    return ok, err, socket.gettime() - t0
  end

  it("no call outlives its timeout by more than a small margin", function()
    local timeout = 300
    local c = dingtalk.new{ endpoint = emu.url, timeout = timeout, retries = 0 }  -- one attempt
    for _, code in ipairs{ "fault-slow-2000", "fault-trickle", "fault-endless" } do
      local ok, err, elapsed = timed(c, code)
      assert.is_false(ok)
      if code == "fault-endless" then
        -- 64 MB/s reaches the 1 MiB cap long before the timeout
        assert.are.equal("transport.too_large", err.code)
      else
        assert.are.equal("transport.timeout", err.code)
        assert.is_true(elapsed >= timeout / 1000 - 0.01, code .. " ended early: " .. elapsed)
      end
      assert.is_true(elapsed < timeout / 1000 + SLACK, code .. " took " .. elapsed .. " s")
    end
    c:close()
  end)

  it("a server that accepts but never answers hits the timeout", function()
    local server = assert(socket.bind("127.0.0.1", 0))
    local _, port = server:getsockname()
    local c = dingtalk.new{ endpoint = "http://127.0.0.1:" .. port, timeout = 250, connect_timeout = 100,
                            retries = 0 }
    local ok, err, elapsed = timed(c, "dingbot-ok")
    server:close()
    assert.is_false(ok)
    assert.are.equal("transport.timeout", err.code)
    assert.is_true(err.retryable)
    assert.is_true(elapsed < 0.25 + SLACK, "took " .. elapsed)
    c:close()
  end)

  it("caps the response at max_body, and a small cap still takes small answers", function()
    local c = dingtalk.new{ endpoint = emu.url, max_body = 64 }
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "fault-huge", token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "transport", "transport.too_large", false }, { err.kind, err.code, err.retryable })
    -- the client is still usable afterwards
    assert.is_false(c.robot.clear_plugins{ robotCode = "dingbot-false", token = TOKEN })
    c:close()
    local big = dingtalk.new{ endpoint = emu.url, max_body = 4 * 1024 * 1024 }
    assert.is_true(big.robot.clear_plugins{ robotCode = "fault-huge", token = TOKEN })  -- 2 MiB, valid
    big:close()
  end)

  it("never follows a redirect: the token is sent once, to the endpoint only", function()
    local c = dingtalk.new{ endpoint = emu.url }
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "fault-redirect", token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "http", "http.302", 302 }, { err.kind, err.code, err.status })
    assert.are.equal(1, #emulator.requests(emu))
    c:close()
  end)

  it("a closed client refuses calls with an argument error", function()
    local c = dingtalk.new{ endpoint = emu.url }
    c:close()
    c:close()   -- idempotent
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "argument", "argument.closed" }, { err.kind, err.code })
    assert.are.equal(0, #emulator.requests(emu))
  end)
end)
