-- Several Lua states in one process (two of them on their own OS threads at
-- the same time), each with several clients: spec/c/states.c, built here
-- against Lua 5.4 and run against the emulator.
local emulator = require "spec.helpers.emulator"
local shell = require "spec.helpers.shell"

describe("several Lua states in one process", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)

  it("work independently, also on two threads at once", function()
    local exe = "build/spec-states-" .. shell.LUA   -- the suite may run under two interpreters at once
    local cc = "cc -std=c99 -Wall -Wextra -Werror -O1 -pthread $(pkg-config --cflags lua5.4) "
      .. "spec/c/states.c -o " .. exe .. " $(pkg-config --libs lua5.4) -ldl -lm 2>&1"
    local p = io.popen("mkdir -p build && " .. cc)
    local out = p:read("*a")
    p:close()
    assert.are.equal("", out)
    emulator.reset(emu)
    p = io.popen(exe .. " " .. emu.url .. " './build/lua5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so' "
      .. "'./lua/?.lua' 20 2>&1; echo rc=$?")
    out = p:read("*a")
    p:close()
    assert.matches("all states ok", out)
    assert.matches("rc=0", out)
    for _, id in ipairs{ 1, 2, 3, 4, 5, 6 } do
      assert.matches("ok state " .. id .. ": 60 calls", out)
    end
    -- 6 runs x 20 rounds x 3 calls, each with the token of its own state
    local reqs = emulator.requests(emu)
    assert.are.equal(360, #reqs)
    local per = {}
    for _, r in ipairs(reqs) do
      local id = r.headers["x-acs-dingtalk-access-token"]:match("(%d+)$")
      per[id] = (per[id] or 0) + 1
    end
    for _, id in ipairs{ "1", "2", "3", "4", "5", "6" } do assert.are.equal(60, per[id]) end
  end)
end)
