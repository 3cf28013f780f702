-- clear_plugins_many in plain Lua: the batch policy (dingtalk.batch) over
-- libcurl's multi interface (core.multi, one kept-alive connection per
-- slot), against the emulator. The cases are spec/71-batch_cases.lua's,
-- which spec/72 runs inside nginx over cosockets with the same assertions.
local emulator = require "spec.helpers.emulator"
local cases = require "spec.71-batch_cases"

-- GET /__emulator/stats when the emulator has it (max_in_flight), else nil.
local function stats(emu)
  local http = require "socket.http"
  local cjson = require "cjson"
  local body, status = http.request(emu.url .. "/__emulator/stats")
  if status ~= 200 or not body then return nil end
  local ok, t = pcall(cjson.decode, body)
  return ok and t or nil
end

describe("clear_plugins_many (libcurl multi)", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  it("runs over the libcurl batch transport outside nginx", function()
    local dingtalk = require "dingtalk"
    local c = dingtalk.new{ endpoint = emu.url }
    local bt = c:batch_open(2)
    assert.is_not_nil(bt.m, "not core.multi")
    assert.are.equal(0, bt:active())
    bt:close()
    c:close()
  end)

  it("is on the module-level dingtalk.robot too", function()
    local dingtalk = require "dingtalk"
    dingtalk.configure{ endpoint = emu.url }
    local res = dingtalk.robot.clear_plugins_many({ "dingbot-false", "dingbot-stopped" },
                                                  { token = "tok-batch-spec-0123456789abcdef" })
    assert.is_string(res[1].request_id)
    res[1].request_id = nil
    assert.are.same({ robotCode = "dingbot-false", ok = true, result = false }, res[1])
    assert.are.same({ "dingbot-stopped", false, "invalidRequest.robotIsStop" },
                    { res[2].robotCode, res[2].ok, res[2].error.code })
    assert.are.equal(2, #emulator.requests(emu))
  end)

  cases.define{
    label = "m", busted = { it = it, assert = assert }, emulator = emulator,
    emu = function() return emu end, run = cases.run,
    stats = function() return stats(emu) end,
  }
end)
