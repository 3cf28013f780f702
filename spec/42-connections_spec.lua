-- Connection reuse: one TCP/TLS connection for many calls (token call
-- included), and a connection the server ended is replaced without the
-- caller noticing and without a request sent twice.
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"
local core = require "dingtalk.core"

local TOKEN = "tok-connections-spec-0123456789"

describe("connections", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function clear(c, code)
    return c.robot.clear_plugins{ robotCode = code, token = TOKEN }
  end

  local function connections(reqs)
    local ids, n = {}, 0
    for _, r in ipairs(reqs) do
      if not ids[r.connection] then ids[r.connection] = true; n = n + 1 end
    end
    return n
  end

  for _, which in ipairs{ "url", "tls_url" } do
    it("many calls, one connection (" .. which .. ")", function()
      local c = dingtalk.new{ endpoint = emu[which], cafile = emu.cafile,
                              app_key = "app-conn-" .. which, app_secret = "secret-conn-0123456789" }
      for _ = 1, 10 do assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" }) end
      assert.are.equal("Help", c.robot.query_plugins{ robotCode = "dingbot-ok" }[1].name)
      local reqs = emulator.requests(emu)
      assert.are.equal(12, #reqs)                -- the token call, ten clears, one query
      assert.are.equal(1, connections(reqs))
      assert.are.equal(12, reqs[12].connection_requests)
      c:close()
    end)
  end

  -- A connection the server closes silently (dingbot-ok-drop: right after
  -- its answer) is replaced once its close has arrived. Until then it looks
  -- alive, and a request sent on it that gets no answer may have been read:
  -- with retries = 0 (at most once) that is transport.closed, below.
  local function closed_by_server() socket.sleep(0.2) end

  for _, code in ipairs{ "dingbot-ok-close", "dingbot-ok-drop" } do
    it("a connection the server ended is replaced (" .. code .. ")", function()
      local c = dingtalk.new{ endpoint = emu.url, retries = 0 }   -- no retry may hide a failure
      assert.is_true(clear(c, "dingbot-ok"))
      assert.is_true(clear(c, code))
      closed_by_server()
      assert.is_true(clear(c, "dingbot-ok"))
      assert.is_true(clear(c, "dingbot-ok"))
      local reqs = emulator.requests(emu)
      assert.are.equal(4, #reqs, "no request was sent twice")
      assert.are.equal(reqs[1].connection, reqs[2].connection)
      assert.are_not.equal(reqs[2].connection, reqs[3].connection)
      assert.are.equal(reqs[3].connection, reqs[4].connection)
      c:close()
    end)
  end

  it("over TLS too", function()
    local c = dingtalk.new{ endpoint = emu.tls_url, cafile = emu.cafile, retries = 0 }
    assert.is_true(clear(c, "dingbot-ok-drop"))
    closed_by_server()
    assert.is_true(clear(c, "dingbot-ok"))
    local reqs = emulator.requests(emu)
    assert.are.equal(2, #reqs)
    assert.are_not.equal(reqs[1].connection, reqs[2].connection)
    c:close()
  end)

  for _, which in ipairs{ "url", "tls_url" } do
    it("at most once while the server closes the connection under the request (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      local url = emu[which] .. "/v1.0/robot/plugins/clear"
      local closed, ok_calls = 0, 0
      for i = 1, 20 do
        assert.is_true(select(2, core.post(c, url, TOKEN, '{"robotCode":"dingbot-ok-drop"}', "result")))
        local code = "dingbot-plugins-race-" .. which .. i
        local ok, res = core.post(c, url, TOKEN, '{"robotCode":"' .. code .. '"}', "result", "POST", true)
        local seen = 0
        for _, r in ipairs(emulator.requests(emu)) do
          if r.body:find(code, 1, true) then seen = seen + 1 end
        end
        if ok then
          ok_calls = ok_calls + 1
          assert.are.equal(1, seen)
        else
          closed = closed + 1
          assert.are.equal("transport.closed", res.code)
          assert.is_true(seen <= 1)
        end
      end
      assert.are.equal(20, closed + ok_calls)
      c:close()
    end)
  end

  it("a retry after a dropped connection opens a new one", function()
    local c = dingtalk.new{ endpoint = emu.url, sleep = function() end }
    assert.is_true(clear(c, "flaky-drop-1-conn" .. os.time()))
    local reqs = emulator.requests(emu)
    assert.are.equal(2, #reqs)
    assert.are_not.equal(reqs[1].connection, reqs[2].connection)
    c:close()
  end)
end)
