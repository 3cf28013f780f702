-- retries = 0 puts the request on the wire at most once (issue 10, point
-- 6): over a kept-alive connection that the server drops after reading
-- the request, libcurl must not re-send it on a new connection. The
-- emulator counts what it received; the caller gets transport.closed.
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local TOKEN = "tok-at-most-once-0123456789"
local CLEAR_PATH = "/v1.0/robot/plugins/clear"

local tags = 0
local function drop_code()
  tags = tags + 1
  -- the server reads the first request with this code and drops the connection
  return "flaky-drop-1-o" .. tags .. "x" .. os.time()
end

describe("retries = 0 is at most once", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function seen(code)
    local n = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == CLEAR_PATH and r.body:find(code, 1, true) then n = n + 1 end
    end
    return n
  end

  -- one good call first, so that the next one goes over a reused connection
  local function warm(c)
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
  end

  it("client:call with retries = 0", function()
    local c = dingtalk.new{ endpoint = emu.url, timeout = 3000 }
    warm(c)
    local code = drop_code()
    local ok, err = pcall(c.call, c, "POST", CLEAR_PATH, { robotCode = code }, { token = TOKEN, retries = 0 })
    assert.is_false(ok, "the dropped request ran a second time and succeeded")
    assert.are.same({ "transport", "transport.closed", 1 }, { err.kind, err.code, err.attempts })
    assert.are.equal(1, seen(code))
    c:close()
  end)

  it("clear_plugins on a client with retries = 0", function()
    local c = dingtalk.new{ endpoint = emu.url, timeout = 3000, retries = 0 }
    warm(c)
    local code = drop_code()
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = code, token = TOKEN })
    assert.is_false(ok, "the dropped request ran a second time and succeeded")
    assert.are.same({ "transport", "transport.closed", 1 }, { err.kind, err.code, err.attempts })
    assert.are.equal(1, seen(code))
    c:close()
  end)

  it("with retries the same drop is retried by the policy, and succeeds", function()
    local c = dingtalk.new{ endpoint = emu.url, timeout = 3000, retries = 1, random = function() return 0 end }
    warm(c)
    local code = drop_code()
    assert.is_true(c.robot.clear_plugins{ robotCode = code, token = TOKEN })
    assert.are.equal(2, seen(code))
    c:close()
  end)
end)
