-- core.multi: n transfers at once over libcurl's multi interface, against
-- the emulator (a real nginx on 127.0.0.1). Each slot is a client's easy
-- handle, so every result and error must be what core.post gives for the
-- same answer; the slots must really overlap, keep their connections, and
-- stop waiting when SIGINT comes.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local scenarios = require "spec.helpers.scenarios"
local reachable = require "spec.helpers.reachable"
local core = require "dingtalk.core"
local shell = require "spec.helpers.shell"

local TOKEN, SECRET = scenarios.TOKEN, scenarios.SECRET
local PATH = "/v1.0/robot/plugins/clear"
local OPTS = { timeout = scenarios.client_options.timeout,
               connect_timeout = scenarios.client_options.connect_timeout }

local function body(code) return cjson.encode{ robotCode = code } end

local function connections(reqs)
  local ids, n = {}, 0
  for _, r in ipairs(reqs) do
    if not ids[r.connection] then ids[r.connection] = true; n = n + 1 end
  end
  return n
end

-- Waits until nothing is in flight (or `limit` seconds); returns the
-- finished entries in the order wait() gave them, each with `at` (seconds
-- since t0).
local function drain(m, limit, t0)
  local got, deadline = {}, core.now() + (limit or 10)
  t0 = t0 or core.now()
  while m:active() > 0 and core.now() < deadline do
    local r = m:wait(1000)
    for _, e in ipairs(r) do
      e.at = core.now() - t0
      got[#got + 1] = e
    end
  end
  assert.are.equal(0, m:active(), "transfers still in flight after " .. (limit or 10) .. " s")
  return got
end

-- A request id made by the emulator (its form; each request gets its own).
local RID = "%x+%-%x+%-%x+%-%x+%-%x+"

local function same_error(want, got, name)
  local msg = name .. ": "
  assert.is_true(core.is_error(got), msg .. "an error table")
  for _, k in ipairs{ "kind", "code", "status", "retryable", "retry_after" } do
    assert.are.equal(want[k], got[k], msg .. k)
  end
  -- request ids differ from request to request; the text around them not
  local function norm(s)
    if s == nil then return nil end
    return (s:gsub(RID, "RID"):gsub("after %d+ milliseconds", "after N milliseconds"))
  end
  assert.are.equal(norm(want.message), norm(got.message), msg .. "message")
  assert.are.equal(norm(want.excerpt), norm(got.excerpt), msg .. "excerpt")
  assert.are.equal(type(want.request_id), type(got.request_id), msg .. "request_id")
  if want.request_id then
    assert.are.equal(norm(want.request_id), norm(got.request_id), msg .. "request_id")
  end
  assert.are.same(want.accessdenieddetail, got.accessdenieddetail, msg .. "accessdenieddetail")
  local keys = {}
  for k in pairs(want) do keys[k] = true end
  for k in pairs(got) do keys[k] = true end
  for k in pairs(keys) do
    assert.is_true(want[k] ~= nil and got[k] ~= nil, msg .. "field " .. k .. " on both")
  end
end

describe("core.multi", function()
  local emu, url

  setup(function()
    emu = emulator.start()
    url = emu.url .. PATH
  end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)
  after_each(function() emulator.configure(emu, { delay_ms = 0 }) end)

  it("runs n transfers at once: 16 answers of 200 ms at n = 16 in well under 16 x 200 ms", function()
    emulator.configure(emu, { delay_ms = 200 })
    local m = assert(core.multi(OPTS, 16))
    local t0 = core.now()
    for i = 1, 16 do assert.is_true(m:start(i, url, TOKEN, body("dingbot-ok"), "result")) end
    assert.are.equal(16, m:active())
    local got = drain(m, 10, t0)
    local elapsed = core.now() - t0
    assert.are.equal(16, #got)
    local seen = {}
    for _, e in ipairs(got) do
      assert.is_true(e.ok)
      assert.is_true(e.result)
      assert.is_nil(e.error)
      assert.is_nil(seen[e.slot], "each slot once")
      seen[e.slot] = true
    end
    -- one after another: 3.2 s at least
    assert.is_true(elapsed < 1.6, "took " .. elapsed .. " s")
    local reqs = emulator.requests(emu)
    assert.are.equal(16, #reqs)
    for _, r in ipairs(reqs) do
      assert.are.equal("POST", r.method)
      assert.are.equal(PATH, r.uri)
      assert.are.equal(TOKEN, r.headers["x-acs-dingtalk-access-token"])
      assert.are.equal("application/json", r.headers["content-type"])
      assert.are.same({ robotCode = "dingbot-ok" }, cjson.decode(r.body))
    end
    assert.are.equal(16, connections(reqs))
    m:close()
  end)

  it("keeps one connection per slot across rounds", function()
    emulator.configure(emu, { delay_ms = 50 })
    local m = assert(core.multi(OPTS, 4))
    for _ = 1, 5 do
      for i = 1, 4 do assert.is_true(m:start(i, url, TOKEN, body("dingbot-ok"), "result")) end
      for _, e in ipairs(drain(m)) do assert.is_true(e.result) end
    end
    -- and with a slot started again as soon as it is free
    local started = 0
    for i = 1, 3 do
      m:start(i, url, TOKEN, body("dingbot-false"), "result")
      started = started + 1
    end
    while m:active() > 0 do
      for _, e in ipairs(m:wait(1000)) do
        assert.is_true(e.ok)
        assert.is_false(e.result)
        if started < 30 then
          assert.is_true(m:start(e.slot, url, TOKEN, body("dingbot-false"), "result"))
          started = started + 1
        end
      end
    end
    local reqs = emulator.requests(emu)
    assert.are.equal(50, #reqs)
    assert.are.equal(4, connections(reqs))
    local most = 0
    for _, r in ipairs(reqs) do if r.connection_requests > most then most = r.connection_requests end end
    assert.is_true(most >= 10, "connections were reused (" .. most .. " requests on the busiest)")
    m:close()
  end)

  -- every scenario, all through one multi of 8 slots (each slot restarted
  -- as soon as it is free), against the same call through core.post
  local list = {}
  for _, sc in ipairs(scenarios.list) do list[#list + 1] = sc end
  list[#list + 1] = { name = "the per-IP block", robotCode = "fault-ip-block",
    err = { kind = "http", code = "http.ip_blocked", status = 403, retryable = true, retry_after = 300 } }

  it("maps every scenario field by field as core.post does (" .. #list .. " scenarios, 8 slots)", function()
    local c = core.new_client(OPTS)
    local want = {}
    for i, sc in ipairs(list) do
      local ok, res = core.post(c, url, sc.token or TOKEN, body(sc.robotCode), "result", nil, nil, SECRET)
      want[i] = { ok = ok == true, value = res }
    end
    c:close()
    emulator.reset(emu)

    local m = assert(core.multi(OPTS, 8))
    local slot_of, next_i, got = {}, 1, {}
    local function start(slot)
      local sc = list[next_i]
      assert.is_true(m:start(slot, url, sc.token or TOKEN, body(sc.robotCode), "result", SECRET))
      slot_of[slot] = next_i
      next_i = next_i + 1
    end
    for s = 1, 8 do start(s) end
    local deadline = core.now() + 30
    while m:active() > 0 and core.now() < deadline do
      for _, e in ipairs(m:wait(1000)) do
        got[slot_of[e.slot]] = e
        if next_i <= #list then start(e.slot) end
      end
    end
    assert.are.equal(0, m:active())
    assert.are.equal(#list, #emulator.requests(emu), "one request per scenario")

    for i, sc in ipairs(list) do
      local e, w = got[i], want[i]
      assert.is_table(e, sc.name .. ": no result")
      assert.are.equal(w.ok, e.ok, sc.name .. ": ok")
      if sc.err == nil then
        assert.are.equal(sc.result, e.result, sc.name)
        assert.are.equal(w.value, e.result, sc.name)
        assert.is_nil(e.error)
      else
        assert.is_nil(e.result)
        same_error(w.value, e.error, sc.name)
        -- and what the scenario expects, as spec/10 checks it
        local x = sc.err
        assert.are.equal(x.kind, e.error.kind, sc.name)
        assert.are.equal(x.code, e.error.code, sc.name)
        assert.are.equal(x.status, e.error.status, sc.name)
        assert.are.equal(x.retryable, e.error.retryable, sc.name)
        if x.message then assert.are.equal(x.message, e.error.message, sc.name) end
        if x.message_match then assert.matches(x.message_match, e.error.message) end
        if x.request_id then assert.matches("^[%w%-]+$", e.error.request_id) end
        if x.excerpt then assert.matches(x.excerpt, e.error.excerpt) end
        if x.retry_after then assert.are.equal(x.retry_after, e.error.retry_after, sc.name) end
        if x.retry_after_min then assert.is_true(e.error.retry_after >= x.retry_after_min) end
        if x.accessdenieddetail then
          assert.are.equal("Robot.SingleChat.ReadWrite", e.error.accessdenieddetail.accessCode)
        end
        assert.is_nil(reachable.leak(e.error, TOKEN), sc.name .. ": the token")
        assert.is_nil(reachable.leak(e.error, SECRET), sc.name .. ": the secret")
      end
    end
    m:close()
  end)

  it("redacts with the token of the slot's own request, and the secret", function()
    local n = 6
    local m = assert(core.multi(OPTS, n))
    -- n tokens with no 8-byte piece in common (nor with any text of the
    -- module's own): a slot redacted with another's token would show its own
    local tokens, x = {}, 7
    local chars = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"
    for i = 1, n do
      local t = {}
      for j = 1, 28 do
        x = (x * 1103515245 + 12345) % 2147483648
        local k = x % #chars + 1
        t[j] = chars:sub(k, k)
      end
      tokens[i] = table.concat(t)
      -- the server echoes the token it got, in every text field
      local code = i % 2 == 0 and "fault-echo-pad-110" or "fault-echo-html-160"
      assert.is_true(m:start(i, url, tokens[i], body(code), "result", SECRET))
    end
    -- the token call's answer echoing the app secret
    local tm = assert(core.multi(OPTS, 1))
    assert.is_true(tm:start(1, emu.url .. "/v1.0/oauth2/accessToken", nil,
                            cjson.encode{ appKey = "app-echo-pad-110", appSecret = SECRET }, nil, SECRET))
    local got = drain(m)
    local tgot = drain(tm)
    assert.are.equal(n, #got)
    local reqs = emulator.requests(emu)
    assert.are.equal(n + 1, #reqs)
    for _, e in ipairs(got) do
      assert.is_false(e.ok)
      local err = e.error
      assert.matches(e.slot % 2 == 0 and "^api$" or "^http$", err.kind)
      for i = 1, n do
        assert.is_nil(reachable.leak(err, tokens[i]), "slot " .. e.slot .. " shows token " .. i)
      end
      assert.matches("%[redacted%]", err.message .. (err.excerpt or "") .. (err.request_id or ""))
    end
    assert.are.equal(1, #tgot)
    assert.are.equal("param.illegal", tgot[1].error.code)
    assert.is_nil(reachable.leak(tgot[1].error, SECRET))
    assert.matches("%[redacted%]", tgot[1].error.message)
    m:close()
    tm:close()
  end)

  it("a timeout on one slot does not hold up the others", function()
    local m = assert(core.multi({ timeout = 600, connect_timeout = 500 }, 4))
    local t0 = core.now()
    assert.is_true(m:start(1, url, TOKEN, body("fault-slow-3000"), "result"))
    local done, slow = 0, nil
    for i = 2, 4 do assert.is_true(m:start(i, url, TOKEN, body("dingbot-ok"), "result")) end
    local first
    while m:active() > 0 do
      for _, e in ipairs(m:wait(2000)) do
        local at = core.now() - t0
        if e.slot == 1 then
          slow = { e = e, at = at }
        else
          assert.is_true(e.ok and e.result, tostring(e.error))
          first = first or at
          done = done + 1
          if not slow then assert.is_true(m:start(e.slot, url, TOKEN, body("dingbot-ok"), "result")) end
        end
      end
    end
    assert.is_truthy(slow)
    assert.is_false(slow.e.ok)
    assert.are.equal("transport.timeout", slow.e.error.code)
    assert.is_true(slow.at >= 0.5 and slow.at < 2, "timed out after " .. slow.at .. " s")
    assert.is_true(first < 0.4, "the first quick answer came after " .. first .. " s")
    assert.is_true(done >= 9, "only " .. done .. " quick answers while one slot waited")
    m:close()
  end)

  it("talks TLS with verification on every slot", function()
    local good = assert(core.multi({ cafile = emu.cafile }, 2))
    local bad = assert(core.multi({}, 2))
    for i = 1, 2 do
      assert.is_true(good:start(i, emu.tls_url .. PATH, TOKEN, body("dingbot-ok"), "result"))
      assert.is_true(bad:start(i, emu.tls_url .. PATH, TOKEN, body("dingbot-ok"), "result"))
    end
    for _, e in ipairs(drain(good)) do assert.is_true(e.result) end
    for _, e in ipairs(drain(bad)) do
      assert.is_false(e.ok)
      assert.are.equal("transport.tls", e.error.code)
    end
    local reqs = emulator.requests(emu)
    assert.are.equal(2, #reqs)
    assert.are.equal("https", reqs[1].scheme)
    good:close()
    bad:close()
  end)

  it("refuses bad arguments before any traffic", function()
    local m = assert(core.multi(OPTS, 3))
    local function refused(code, field, ...)
      local ok, err = m:start(...)
      assert.is_nil(ok)
      assert.is_true(core.is_error(err))
      assert.are.equal("argument", err.kind)
      assert.are.equal(code, err.code)
      assert.are.equal(field, err.field)
      assert.is_false(err.retryable)
    end
    for _, s in ipairs{ 0, 4, -1, 1.5, 0 / 0, math.huge } do
      refused("argument.slot", "slot", s, url, TOKEN, body("dingbot-ok"), "result")
    end
    refused("argument.token", "token", 1, url, "", body("dingbot-ok"), "result")
    refused("argument.token", "token", 1, url, ("t"):rep(1025), body("dingbot-ok"), "result")
    refused("argument.control_char", "token", 1, url, "tok\r\nX-Evil: 1", body("dingbot-ok"), "result")
    assert.has_error(function() m:start(1, url, TOKEN, nil) end)
    assert.has_error(function() m:start("one", url, TOKEN, body("dingbot-ok")) end)
    assert.has_error(function() m:wait("soon") end)
    assert.has_error(function() core.multi(OPTS, 0) end)
    assert.has_error(function() core.multi(OPTS, 257) end)
    assert.has_error(function() core.multi(OPTS) end)
    assert.are.equal(0, m:active())
    assert.are.equal(0, #emulator.requests(emu), "nothing sent")
    -- a busy slot: the one transfer goes, the second start is refused
    assert.is_true(m:start(2, url, TOKEN, body("dingbot-ok"), "result"))
    refused("argument.busy", "slot", 2, url, TOKEN, body("dingbot-ok"), "result")
    -- still busy once finished, until wait() has given the result
    core.sleep(0.1)
    refused("argument.busy", "slot", 2, url, TOKEN, body("dingbot-ok"), "result")
    local got = drain(m)
    assert.are.equal(1, #got)
    assert.are.equal(2, got[1].slot)
    assert.are.equal(1, #emulator.requests(emu))
    assert.is_true(m:start(2, url, TOKEN, body("dingbot-ok"), "result"))
    drain(m)
    m:close()
    refused("argument.closed", "multi", 1, url, TOKEN, body("dingbot-ok"), "result")
    local ok, err = m:wait(10)
    assert.is_nil(ok)
    assert.are.equal("argument.closed", err.code)
    assert.are.equal(2, #emulator.requests(emu))
  end)

  it("wait() returns what finished, an empty list at its timeout", function()
    emulator.configure(emu, { delay_ms = 400 })
    local m = assert(core.multi(OPTS, 2))
    local t0 = core.now()
    assert.are.same({}, m:wait(50))          -- nothing in flight: at once
    assert.is_true(core.now() - t0 < 0.04)
    m:start(1, url, TOKEN, body("dingbot-ok"), "result")
    t0 = core.now()
    local r = m:wait(100)
    local took = core.now() - t0
    assert.are.same({}, r)
    assert.is_true(took >= 0.09 and took < 0.35, "took " .. took .. " s")
    assert.are.equal(1, m:active())
    r = m:wait(5000)
    assert.are.equal(1, #r)
    -- with the request id the server gave it, as client:last() would
    local reqs = emulator.requests(emu)
    assert.are.equal(reqs[#reqs].requestid, r[1].request_id)
    r[1].request_id = nil
    assert.are.same({ slot = 1, ok = true, result = true }, r[1])
    assert.are.equal(0, m:active())
    m:close()
  end)

  it("the metatable is not handed out; close and __gc during transfers are safe", function()
    emulator.configure(emu, { delay_ms = 300 })
    local m = assert(core.multi(OPTS, 4))
    assert.are.equal("dingtalk.multi", getmetatable(m))
    assert.has_error(function() setmetatable(m, nil) end)
    assert.matches("^dingtalk%.multi %(open%)", tostring(m))
    for i = 1, 4 do m:start(i, url, TOKEN, body("dingbot-ok"), "result") end
    m:wait(50)
    assert.are.equal(4, m:active())
    m:close()
    m:close()
    assert.are.equal(0, m:active())
    assert.matches("^dingtalk%.multi %(closed%)", tostring(m))
    -- dropped while running: the collector frees it
    for _ = 1, 20 do
      local x = assert(core.multi(OPTS, 4))
      for i = 1, 4 do x:start(i, url, TOKEN, body("dingbot-ok"), "result") end
      x:wait(10)
    end
    collectgarbage()
    collectgarbage()
    -- a new batch works as before
    emulator.configure(emu, { delay_ms = 0 })
    local y = assert(core.multi(OPTS, 2))
    y:start(1, url, TOKEN, body("dingbot-ok"), "result")
    assert.is_true(drain(y)[1].result)
    y:close()
  end)

  it("a finalizer's close() during wait() takes effect after it, with the results intact", function()
    local gc = debug.getmetatable(core.multi(OPTS, 1)).__gc
    local inside = 0
    -- small steps: a step runs a few finalizers, not all of them
    local stepmul = collectgarbage("setstepmul", 1)
    if _VERSION == "Lua 5.4" then collectgarbage("incremental", 100, 1, 1) end
    for _ = 1, 40 do
      local m = assert(core.multi(OPTS, 4))
      for i = 1, 4 do m:start(i, url, TOKEN, body("fault-echo-html-30000"), "result") end
      collectgarbage()
      collectgarbage("stop")
      local state = { ran = 0 }
      for _ = 1, 2000 do
        local function fin()
          state.ran = state.ran + 1
          if state.armed and state.ran == 1 then gc(m) end
        end
        if rawget(_G, "newproxy") then getmetatable(newproxy(true)).__gc = fin
        else setmetatable({}, { __gc = fin }) end
      end
      for _ = 1, 200000 do              -- a whole cycle in small steps (5.1: many)
        if state.ran > 0 then break end
        collectgarbage("step", 0)
      end
      state.armed, state.ran = true, 0
      collectgarbage("restart")
      local r = m:wait(5000)
      state.armed = false
      if state.ran > 0 and #r > 0 then
        inside = inside + 1
        for _, e in ipairs(r) do
          assert.are.equal("http.502", e.error.code)
          assert.matches("^<html>", e.error.excerpt)
        end
        local ok, err = m:wait(10)
        assert.is_nil(ok)
        assert.are.equal("argument.closed", err.code)
      end
      m:close()
      if inside >= 3 then break end
    end
    collectgarbage("setstepmul", stepmul)
    if _VERSION == "Lua 5.4" then collectgarbage("incremental", 200, 100, 13) end   -- the defaults
    collectgarbage()
    assert.is_true(inside >= 1, "no finalizer ran inside wait()")
  end)
end)

-- A Lua host whose n-th growing allocation fails (as spec/c/oom.c), for
-- a script given as a file: usage: host SCRIPT URL CPATH LPATH
local OOM_HOST = [[
#include <stdio.h>
#include <stdlib.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#if LUA_VERSION_NUM >= 502
#define BURST 2
#else
#define BURST 1
#define LUA_OK 0
#endif
static long countdown = 0;
static int fired = 0, burst = 0;
static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) { free(ptr); return NULL; }
  if (ptr == NULL || nsize > osize) {
    if (burst > 0) { burst--; return NULL; }
    if (countdown > 0 && --countdown == 0) { fired = 1; burst = BURST - 1; return NULL; }
  }
  return realloc(ptr, nsize);
}
static int arm(lua_State *L) { fired = 0; burst = 0; countdown = (long)luaL_checknumber(L, 1); return 0; }
static int disarm(lua_State *L) { countdown = 0; lua_pushboolean(L, fired); return 1; }
int main(int argc, char **argv) {
  lua_State *L = lua_newstate(alloc, NULL);
  int bad;
  if (argc != 5 || L == NULL) return 2;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, argv[3]);
  lua_setfield(L, -2, "cpath");
  lua_pushstring(L, argv[4]);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadfile(L, argv[1]) != LUA_OK) goto fail;
  lua_pushstring(L, argv[2]);
  lua_pushcfunction(L, arm);
  lua_pushcfunction(L, disarm);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) goto fail;
  bad = (int)lua_tonumber(L, -1);
  lua_close(L);
  puts(bad ? "FAILED" : "oom ok");
  return bad != 0;
fail:
  fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L);
  return 1;
}
]]

-- For every N: the N-th allocation of two starts and the waits that follow
-- fails. A start either starts or raises; a wait either gives results or
-- raises, and then the results wait for the next wait(): every transfer
-- started gives exactly one result, the one expected, and the batch stays
-- usable.
local OOM_SCRIPT = [[
local url, arm, disarm = ...
local core = require "dingtalk.core"
local TOKEN = "tok-oom-multi-0123456789"
local cases = {
  { "fault-echo-html-40", "http.502" }, { "fault-echo-pad-40", "param.illegal" },
  { "dingbot-ok", true }, { "fault-huge", "transport.too_large" },
}
local bodies = {}
for i, c in ipairs(cases) do bodies[i] = '{"robotCode":"' .. c[1] .. '"}' end
local function expected(i, e)
  local want = cases[i][2]
  if want == true then return e.ok and e.result == true end
  return not e.ok and e.error.code == want
end
local MEM = "not enough memory"
-- nothing below allocates while armed but the calls under test: the
-- tables are made beforehand, failures are counted, printed after
local bad, n, raised = 0, 0, 0
local started, got = { false, false, false, false }, { 0, 0, 0, 0 }
local m = assert(core.multi({ max_body = 4096 }, #cases))
while true do
  n = n + 1
  local wrong, lost = 0, 0
  for i = 1, #cases do started[i] = false; got[i] = 0 end
  arm(n)
  for i = 1, #cases do
    local ok, r = pcall(m.start, m, i, url, TOKEN, bodies[i], "result")
    if ok and r == true then started[i] = true
    elseif ok or r ~= MEM then wrong = wrong + 1
    else raised = raised + 1 end
  end
  local deadline = core.now() + 10
  while m:active() > 0 and core.now() < deadline do
    local ok, r = pcall(m.wait, m, 1000)
    if ok then
      for k = 1, #r do
        local e = r[k]
        got[e.slot] = got[e.slot] + 1
        if not expected(e.slot, e) then wrong = wrong + 1 end
      end
    elseif r ~= MEM then wrong = wrong + 1
    else raised = raised + 1 end
  end
  local hit = disarm()
  for i = 1, #cases do
    if started[i] and got[i] ~= 1 then lost = lost + 1 end
    if not started[i] and got[i] ~= 0 then lost = lost + 1 end
  end
  if wrong + lost > 0 then
    bad = bad + 1
    print(("N=%d: %d wrong, %d lost or twice"):format(n, wrong, lost))
  end
  if not hit then break end
end
m:close()
print(("%d allocations, %d memory errors raised"):format(n - 1, raised))
return bad
]]

-- fork() needs a binding: LuaJIT's FFI has one; the other interpreters
-- skip this part (the client's fork safety has spec/17 and spec/c/fork.c).
local ffi = jit and require "ffi"
if ffi then
  ffi.cdef [[
    int fork(void);
    int waitpid(int pid, int *status, int options);
    void _exit(int status);
  ]]
end

describe("core.multi out of memory", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)

  for _, lua in ipairs{ "lua5.4", "lua5.1" } do
    it("one failed allocation at every point of start() and wait(): nothing lost, nothing twice (" .. lua .. ")",
       function()
      os.execute("mkdir -p build")
      -- named per running interpreter too: the suite may run under two at once
      local base = "build/spec-multi-oom-" .. lua .. "-" .. shell.LUA
      local src, script, exe = base .. ".c", base .. ".lua", base
      local f = assert(io.open(src, "w")); f:write(OOM_HOST); f:close()
      f = assert(io.open(script, "w")); f:write(OOM_SCRIPT); f:close()
      local p = io.popen("cc -std=c99 -Wall -Wextra -Werror -O1 $(pkg-config --cflags " .. lua .. ") " .. src
        .. " -o " .. exe .. " $(pkg-config --libs " .. lua .. ") -ldl -lm 2>&1; echo rc=$?")
      local out = p:read("*a"); p:close()
      assert.matches("rc=0\n$", out)
      local v = lua:match("%d+%.%d+")
      p = io.popen(table.concat({ exe, script, emu.url .. PATH,
        "'./build/" .. lua .. "/?.so;/usr/lib/x86_64-linux-gnu/lua/" .. v .. "/?.so'", "'./lua/?.lua'" }, " ")
        .. " 2>&1; echo rc=$?")
      out = p:read("*a"); p:close()
      assert.matches("oom ok\nrc=0\n$", out)
      local allocs, raised = out:match("(%d+) allocations, (%d+) memory errors raised")
      assert.is_true(tonumber(allocs) > 20, out)
      assert.is_true(tonumber(raised) > 0, out)
    end)
  end
end)

describe("core.multi after fork()", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  -- rounds on every slot with `who`'s token; returns an error text or nil
  local function rounds(m, base, who, n)
    local code = who == "parent" and "dingbot-ok" or "dingbot-false"
    for _ = 1, n do
      for i = 1, 2 do m:start(i, base .. PATH, "tok-fork-" .. who, body(code), "result") end
      local got = 0
      while m:active() > 0 do
        for _, e in ipairs(m:wait(2000)) do
          if not e.ok then return who .. ": " .. tostring(e.error) end
          if e.result ~= (who == "parent") then return who .. " got the other answer" end
          got = got + 1
        end
      end
      if got ~= 2 then return who .. ": " .. got .. " answers" end
    end
  end

  local function fork_child(fn)
    local out = os.tmpname()
    local pid = ffi.C.fork()
    assert.is_true(pid >= 0)
    if pid == 0 then
      local ok, err = pcall(fn)
      local f = io.open(out, "w")
      f:write(ok and (err or "ok") or tostring(err))
      f:close()
      ffi.C._exit(0)
    end
    return pid, out
  end

  local function child_said(pid, out)
    local st = ffi.new("int[1]")
    ffi.C.waitpid(pid, st, 0)
    local f = io.open(out)
    local said = f and f:read("*a")
    if f then f:close() end
    os.remove(out)
    return said
  end

  for _, which in ipairs{ "url", "tls_url" } do
    local run = ffi and it or pending
    run("parent and child each get their own answers, the child on new connections (" .. which .. ")", function()
      local base = emu[which]
      local m = assert(core.multi({ cafile = emu.cafile, timeout = 5000 }, 2))
      assert.is_nil(rounds(m, base, "parent", 2))
      local before = {}
      for _, r in ipairs(emulator.requests(emu)) do before[r.connection] = true end
      local pid, out = fork_child(function() return rounds(m, base, "child", 5) end)
      local perr = rounds(m, base, "parent", 5)
      assert.are.equal("ok", child_said(pid, out))
      assert.is_nil(perr)
      -- transfers in flight at the fork: the parent's; the child is told
      -- they ended (transport.closed) and the parent gets the answers
      for i = 1, 2 do m:start(i, base .. PATH, "tok-fork-parent", body("fault-slow-300"), "result") end
      m:wait(50)
      pid, out = fork_child(function()
        local codes = {}
        while m:active() > 0 do
          for _, e in ipairs(m:wait(2000)) do codes[#codes + 1] = e.error and e.error.code end
        end
        return table.concat(codes, ",")
      end)
      local got = {}
      while m:active() > 0 do
        for _, e in ipairs(m:wait(2000)) do got[#got + 1] = e.ok and e.result end
      end
      assert.are.equal("transport.closed,transport.closed", child_said(pid, out))
      assert.are.same({ true, true }, got)
      -- a child that only closes the batch leaves the parent's connections whole
      pid, out = fork_child(function() m:close() end)
      assert.are.equal("ok", child_said(pid, out))
      assert.is_nil(rounds(m, base, "parent", 2))
      m:close()
      local reqs = emulator.requests(emu)
      assert.are.equal(4 + 10 + 10 + 2 + 4, #reqs)
      for _, r in ipairs(reqs) do
        local who = r.headers["x-acs-dingtalk-access-token"]:match("^tok%-fork%-(%a+)$")
        if who == "parent" then
          assert.is_true(before[r.connection], "the parent kept its connections")
        else
          assert.is_nil(before[r.connection], "the child used connections of its own")
        end
      end
    end)
  end
end)

describe("core.sigint", function()
  local emu, url

  setup(function()
    emu = emulator.start()
    url = emu.url .. PATH
  end)
  teardown(function()
    core.sigint(false)
    if emu then emulator.stop(emu) end
  end)
  after_each(function() emulator.configure(emu, { delay_ms = 0 }) end)

  -- this interpreter's pid: the parent of the shell io.popen starts
  local function my_pid()
    local p = io.popen("echo $PPID")
    local pid = p:read("*l")
    p:close()
    return assert(tonumber(pid))
  end

  it("SIGINT makes wait() return early, with the flag set; the transfers go on", function()
    emulator.configure(emu, { delay_ms = 1500 })
    assert.is_true(core.sigint(true))
    assert.is_false(core.interrupted())
    local m = assert(core.multi({ timeout = 5000 }, 2))
    for i = 1, 2 do m:start(i, url, TOKEN, body("dingbot-ok"), "result") end
    -- a child shell sends it in 0.3 s
    os.execute("(sleep 0.3; kill -INT " .. my_pid() .. ") >/dev/null 2>&1 &")
    local t0 = core.now()
    local r = m:wait(10000)
    local took = core.now() - t0
    assert.are.same({}, r)
    assert.is_true(took >= 0.2 and took < 1.2, "wait() returned after " .. took .. " s")
    assert.is_true(core.interrupted())
    assert.is_false(core.interrupted(), "reading the flag clears it")
    assert.are.equal(2, m:active())
    -- the calls in flight finish as usual
    local got = drain(m, 10)
    assert.are.equal(2, #got)
    for _, e in ipairs(got) do assert.is_true(e.result) end
    -- and a SIGINT while the transfers run: close() then is safe
    m:start(1, url, TOKEN, body("dingbot-ok"), "result")
    os.execute("(sleep 0.2; kill -INT " .. my_pid() .. ") >/dev/null 2>&1 &")
    assert.are.same({}, m:wait(10000))
    assert.is_true(core.interrupted())
    m:close()
    assert.is_true(core.sigint(false))
  end)

  it("sigint(false) gives back the handler that was there", function()
    -- in a child interpreter, whose own SIGINT handler (lua.c's) raises
    -- "interrupted!": with core.sigint(true) the signal only sets the flag
    local script = [[
      package.cpath = "./build/]] .. (jit and "luajit" or _VERSION:gsub("Lua ", "lua")) .. [[/?.so;" .. package.cpath
      local core = require "dingtalk.core"
      -- system() ignores SIGINT while it waits: the kill comes after it
      local function kill() os.execute("(sleep 0.1; kill -INT $PPID) &") core.sleep(0.4) end
      core.sigint(true)
      kill()
      io.write("flag ", tostring(core.interrupted()), "\n")
      core.sigint(false)
      io.write("restored\n")
      io.flush()
      kill()
      io.write("not reached\n")
    ]]
    local f = os.tmpname()
    local h = io.open(f, "w")
    h:write(script)
    h:close()
    local exe = jit and "luajit" or _VERSION:gsub("Lua ", "lua")
    local p = io.popen(exe .. " " .. f .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(f)
    assert.matches("flag true\nrestored\n", out)
    assert.is_nil(out:find("not reached", 1, true), out)
    assert.matches("interrupted", out)
  end)
end)
