-- Memory safety of the Lua glue: a finalizer that frees the client in the
-- middle of post(), and one failed allocation at every point of the
-- mapping (spec/c/oom.c, built against Lua 5.4 and 5.1).
local emulator = require "spec.helpers.emulator"
local shell = require "spec.helpers.shell"
local core = require "dingtalk.core"

local sh, q = shell.sh, shell.q
local TOKEN = "tok-memory-spec-0123456789"

describe("memory safety of the glue", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  it("the client's metatable is not handed out", function()
    local c = core.new_client{}
    assert.are.equal("dingtalk.client", getmetatable(c))
    assert.has_error(function() setmetatable(c, nil) end)
    c:close()
  end)

  -- Unreachable objects whose finalizer calls the client's __gc by hand
  -- (the metatable is still reachable through the debug library) once
  -- armed; counts the ones that ran.
  local function finalizers(gc, c, state, n)
    for _ = 1, n do
      local function fin()
        state.ran = state.ran + 1
        if state.armed then
          state.closed = state.closed + 1
          gc(c)
        end
      end
      if rawget(_G, "newproxy") then          -- 5.1, LuaJIT: __gc on userdata only
        getmetatable(newproxy(true)).__gc = fin
      else
        setmetatable({}, { __gc = fin })
      end
    end
  end

  it("__gc called by hand from a finalizer during post() waits for post() to finish", function()
    -- A large HTML error page: the mapping copies it (a GC step, which
    -- runs pending finalizers) before it reads the body for the excerpts.
    local code = "fault-echo-html-30000"
    local post, url = core.post, emu.url .. "/v1.0/robot/plugins/clear"
    local body = '{"robotCode":"' .. code .. '"}'
    local ref = core.new_client{}
    local _, want = post(ref, url, TOKEN, body, "result")
    ref:close()
    assert.are.equal("http.502", want.code)
    -- small steps: a step runs a few finalizers, not all of them
    local stepmul = collectgarbage("setstepmul", 1)
    if _VERSION == "Lua 5.4" then collectgarbage("incremental", 100, 1, 1) end
    local inside, rounds = 0, 0
    for i = 1, 50 do
      rounds = i
      collectgarbage()
      local c = core.new_client{}
      local state = { ran = 0, closed = 0, armed = false }
      -- no cycle but the steps taken here until the finalizers have begun
      -- to run: the rest are pending when post() allocates
      collectgarbage("stop")
      finalizers(debug.getmetatable(c).__gc, c, state, 2000)
      -- 5.1 and LuaJIT: steps big enough to get through the marking of the
      -- suite's large heap (a few finalizers each once they begin), then
      -- the smallest again: one finalizer per step
      if _VERSION ~= "Lua 5.4" then collectgarbage("setstepmul", 100) end
      for _ = 1, 500000 do
        if state.ran > 0 then break end
        collectgarbage("step", 0)
      end
      if _VERSION ~= "Lua 5.4" then collectgarbage("setstepmul", 1) end
      state.armed = true
      collectgarbage("restart")
      if state.ran > 0 and state.ran < 2000 then
        local ok, err = post(c, url, TOKEN, body, "result")
        state.armed = false
        assert.is_nil(ok)
        -- whatever ran inside, the answer read is the whole, intact one
        assert.are.same({ want.code, want.message, want.excerpt, want.request_id },
                        { err.code, err.message, err.excerpt, err.request_id })
        if state.closed > 0 then
          inside = inside + 1
          -- the client was closed by the finalizer, once post() was done
          local ok2, err2 = post(c, url, TOKEN, '{"robotCode":"dingbot-ok"}', "result")
          assert.is_nil(ok2)
          assert.are.equal("argument.closed", err2.code)
        end
      end
      c:close()
      if inside >= 3 then break end
    end
    collectgarbage("setstepmul", stepmul)
    if _VERSION == "Lua 5.4" then collectgarbage("incremental", 200, 100, 13) end   -- the defaults
    collectgarbage()
    assert.is_true(inside >= 3, "finalizers closed the client inside post() " .. inside .. " times in "
                   .. rounds .. " rounds")
  end)

  for _, lua in ipairs{ "lua5.4", "lua5.1" } do
    it("one failed allocation while mapping: transport.memory, and the client stays usable (" .. lua .. ")",
       function()
      local exe = "build/spec-oom-" .. lua .. "-" .. shell.LUA   -- the suite may run under two interpreters at once
      local rc, out = sh("mkdir -p build && cc -std=c99 -Wall -Wextra -Werror -O1 $(pkg-config --cflags " .. lua
        .. ") spec/c/oom.c -o " .. exe .. " $(pkg-config --libs " .. lua .. ") -ldl -lm")
      assert.are.equal(0, rc, out)
      local v = lua:match("%d+%.%d+")
      rc, out = sh(table.concat({ exe, emu.url, q("./build/" .. lua .. "/?.so;/usr/lib/x86_64-linux-gnu/lua/" .. v
        .. "/?.so"), q("./lua/?.lua") }, " "))
      assert.are.equal(0, rc, out)
      assert.matches("oom ok", out)
      -- every case failed at several points, each time as an error table
      for _, case in ipairs{ "result table", "api error", "http error", "transport error" } do
        local n, tables, raised = out:match("case " .. case .. ": (%d+) allocations, (%d+) memory errors as tables, "
                                            .. "(%d+) raised")
        assert.is_true(tonumber(n) >= 2, out)
        assert.are.equal(n, tables, out)
        assert.are.equal("0", raised, out)
      end
    end)
  end
end)
