-- Retries: which failures are tried again, how long the client waits
-- (exponential backoff with full jitter, Retry-After, a cap, a deadline),
-- and how many requests the server saw. The clock is injected (sleep/now/
-- random options) so the arithmetic is checked without waiting; one spec
-- waits for real.
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"
local retry = require "dingtalk.retry"

local TOKEN = "tok-retries-spec-0123456789abcdef"

local tags = 0
local function flaky(kind, n)
  tags = tags + 1
  return "flaky-" .. kind .. "-" .. n .. "-r" .. tags .. "x" .. os.time()
end

-- A fake clock: sleep advances it and records the waits.
local function fake_clock(random)
  local c = { t = 1000, waits = {} }
  c.sleep = function(s) c.waits[#c.waits + 1] = s; c.t = c.t + s end
  c.now = function() return c.t end
  c.random = random or function() return 1 end
  return c
end

describe("retries", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function client(opts, clock)
    opts = opts or {}
    opts.endpoint = emu.url
    opts.timeout = opts.timeout or 2000
    if clock then opts.sleep, opts.now, opts.random = clock.sleep, clock.now, clock.random end
    return dingtalk.new(opts)
  end

  local function clear(c, code)
    return pcall(c.robot.clear_plugins, { robotCode = code, token = TOKEN })
  end

  local function seen(path)
    local n = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == (path or "/v1.0/robot/plugins/clear") then n = n + 1 end
    end
    return n
  end

  it("retries a 500 and succeeds: the server saw every attempt", function()
    local clock = fake_clock()
    local c = client({}, clock)
    local ok, res = clear(c, flaky("500", 2))
    assert.is_true(ok, tostring(res))
    assert.is_true(res)
    assert.are.equal(3, seen())
    -- random() = 1: the full backoff, 0.2 s then 0.4 s
    assert.are.same({ 0.2, 0.4 }, clock.waits)
    c:close()
  end)

  for _, kind in ipairs{ "502", "throttle", "qps", "drop" } do
    it("retries " .. kind .. " once and succeeds", function()
      local clock = fake_clock()
      local c = client({}, clock)   -- a fresh connection: libcurl's own re-send never applies
      local ok, res = clear(c, flaky(kind, 1))
      assert.is_true(ok, tostring(res))
      assert.are.equal(2, seen())
      assert.are.equal(1, #clock.waits)
      c:close()
    end)
  end

  it("retries a timeout", function()
    local clock = fake_clock()
    local c = client({ timeout = 300 }, clock)
    local ok, res = clear(c, flaky("slow", 1))
    assert.is_true(ok, tostring(res))
    assert.are.equal(2, seen())
    c:close()
  end)

  it("gives up after retries + 1 attempts and says how many", function()
    local clock = fake_clock()
    local c = client({}, clock)
    local ok, err = clear(c, flaky("500", 100))
    assert.is_false(ok)
    assert.are.equal("system.error", err.code)
    assert.are.equal(4, err.attempts)
    assert.are.equal(4, seen())
    assert.matches(" %(4 attempts%)$", tostring(err))
    assert.are.same({ 0.2, 0.4, 0.8 }, clock.waits)
    c:close()
  end)

  it("never retries what is not retryable", function()
    local clock = fake_clock()
    local c = client({}, clock)
    for _, code in ipairs{ "dingbot-stopped", "fault-no-permission", "fault-no-result",
                           "fault-not-json", "fault-redirect", flaky("400", 1) } do
      emulator.reset(emu)
      local ok, err = clear(c, code)
      assert.is_false(ok, code)
      assert.are.equal(1, seen(), code)
      assert.are.equal(1, err.attempts)
      assert.is_nil(tostring(err):find("attempts", 1, true))
    end
    assert.are.same({}, clock.waits)
    c:close()
  end)

  it("argument errors are raised before any attempt", function()
    local c = client({}, fake_clock())
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.are.equal("argument.missing", err.code)
    assert.are.equal(0, seen())
    c:close()
  end)

  it("retries = 0 turns retrying off", function()
    local clock = fake_clock()
    local c = client({ retries = 0 }, clock)
    local ok, err = clear(c, "fault-system-error")
    assert.is_false(ok)
    assert.are.equal(1, seen())
    assert.are.equal(1, err.attempts)
    assert.are.same({}, clock.waits)
    c:close()
  end)

  it("honours Retry-After over a shorter backoff", function()
    local clock = fake_clock(function() return 0 end)
    local c = client({}, clock)
    local ok, res = clear(c, flaky("429", 1))
    assert.is_true(ok, tostring(res))
    assert.are.equal(2, seen())
    assert.are.same({ 2 }, clock.waits)   -- the server's 2 s, not the jittered 0
    c:close()
  end)

  it("does not wait for a Retry-After past the deadline", function()
    local clock = fake_clock()
    local c = client({ retry_deadline = 1000 }, clock)
    local ok, err = clear(c, flaky("429", 1))
    assert.is_false(ok)
    assert.are.equal(2, err.retry_after)
    assert.are.equal(1, err.attempts)
    assert.are.equal(1, seen())
    assert.are.same({}, clock.waits)
    c:close()
  end)

  it("stops at the overall deadline, whatever the attempt count", function()
    local clock = fake_clock()
    local c = client({ retries = 10, retry_deadline = 500 }, clock)
    local ok, err = clear(c, flaky("500", 100))
    assert.is_false(ok)
    -- waits 0.2 (ends at 0.2 <= 0.5), then 0.4 would end at 0.6 > 0.5
    assert.are.equal(2, err.attempts)
    assert.are.equal(2, seen())
    assert.are.same({ 0.2 }, clock.waits)
    c:close()
  end)

  it("caps each wait at retry_max_delay and jitters below the ceiling", function()
    local p = retry.options{ retry_base_delay = 100, retry_max_delay = 1000, random = function() return 1 end }
    local got = {}
    for i = 1, 7 do got[i] = retry.delay(p, i, nil) end
    assert.are.same({ 0.1, 0.2, 0.4, 0.8, 1, 1, 1 }, got)
    local half = retry.options{ retry_base_delay = 100, retry_max_delay = 1000, random = function() return 0.5 end }
    assert.are.equal(0.2, retry.delay(half, 3, nil))
    assert.are.equal(3, retry.delay(half, 1, { retry_after = 3 }))
    -- the default random: uniform in [0, ceiling]
    local d = retry.options{}
    for _ = 1, 200 do
      local w = retry.delay(d, 3, nil)
      assert.is_true(w >= 0 and w <= 0.8)
    end
  end)

  it("refuses bad retry options", function()
    for _, o in ipairs{ { retries = -1 }, { retries = 1.5 }, { retries = "3" }, { retry_base_delay = -5 },
                        { retry_max_delay = 0 / 0 }, { retry_deadline = true }, { sleep = 1 },
                        { now = "x" }, { random = {} }, { on_request = 42 } } do
      local ok, err = pcall(dingtalk.new, o)
      assert.is_false(ok)
      assert.are.equal("argument.option", err.code)
      local k = next(o)
      assert.are.equal(k, err.field)
    end
  end)

  it("waits for real between attempts (core.sleep)", function()
    local socket = require "socket"
    local c = client{ retry_base_delay = 50, random = function() return 1 end }
    local t0 = socket.gettime()
    local ok, res = clear(c, flaky("500", 2))
    local elapsed = socket.gettime() - t0
    assert.is_true(ok, tostring(res))
    assert.are.equal(3, seen())
    assert.is_true(elapsed >= 0.15 and elapsed < 1.5, "took " .. elapsed)
    c:close()
  end)

  it("the on_request hook sees every attempt, never the token", function()
    local events = {}
    local clock = fake_clock()
    local c = client({ on_request = function(ev) events[#events + 1] = ev end }, clock)
    local ok = clear(c, flaky("500", 2))
    assert.is_true(ok)
    assert.are.equal(3, #events)
    for i, ev in ipairs(events) do
      assert.are.equal("POST", ev.method)
      assert.are.equal("/v1.0/robot/plugins/clear", ev.path)
      assert.are.equal(i, ev.attempt)
      assert.are.equal("number", type(ev.duration))
      assert.matches("^[%w%-]+$", ev.request_id)
      for k, v in pairs(ev) do
        assert.is_nil(tostring(v):find(TOKEN, 1, true), "event field " .. k .. " carries the token")
      end
    end
    assert.are.same({ 500, "system.error", false, 0.2 },
                    { events[1].status, events[1].code, events[1].ok, events[1].retry_in })
    assert.are.same({ 200, true }, { events[3].status, events[3].ok })
    assert.is_nil(events[3].code)
    assert.is_nil(events[3].retry_in)
    -- a hook that raises does not fail the call
    local c2 = client({ on_request = function() error("boom") end }, fake_clock())
    assert.is_true(c2.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    c:close(); c2:close()
  end)
end)
