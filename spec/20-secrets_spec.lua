-- The access token never appears in an error: not in a field, not nested,
-- not in tostring. The whole scenario list runs with a distinctive token
-- and every error it produces is searched.
local emulator = require "spec.helpers.emulator"
local scenarios = require "spec.helpers.scenarios"
local dingtalk = require "dingtalk"

local TOKEN = scenarios.TOKEN

local strings = require("spec.helpers.reachable").strings

describe("secrets", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)

  it("no error of the whole scenario list carries the token", function()
    local client = dingtalk.new{ endpoint = emu.url, timeout = 800 }
    local errors = 0
    for _, sc in ipairs(scenarios.list) do
      if not sc.token then
        local ok, err = pcall(client.robot.clear_plugins, { robotCode = sc.robotCode, token = TOKEN })
        if not ok then
          errors = errors + 1
          for _, s in ipairs(strings(err)) do
            assert.is_nil(s:find(TOKEN, 1, true), sc.name .. " leaks the token in: " .. s)
          end
        end
      end
    end
    assert.is_true(errors >= 20, "the scenario list should produce errors")
    -- the echo scenario really did get the token back from the server
    local echoed = false
    for _, r in ipairs(emulator.requests(emu)) do
      if r.headers["x-acs-dingtalk-access-token"] == TOKEN then echoed = true end
    end
    assert.is_true(echoed)
    client:close()
  end)

  it("transport errors and TLS failures carry no token either", function()
    for _, opts in ipairs{ { endpoint = "http://127.0.0.1:1" }, { endpoint = emu.tls_url },
                           { endpoint = emu.url, max_body = 10 } } do
      local c = dingtalk.new(opts)
      local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN })
      assert.is_false(ok)
      for _, s in ipairs(strings(err)) do assert.is_nil(s:find(TOKEN, 1, true)) end
      c:close()
    end
  end)

  it("neither the client nor its tostring holds the token", function()
    local c = dingtalk.new{ endpoint = emu.url }
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    for _, s in ipairs(strings(c)) do assert.is_nil(s:find(TOKEN, 1, true)) end
    assert.is_nil(tostring(c._core):find(TOKEN, 1, true))
    c:close()
  end)
end)
