-- The cases of clear_plugins_many, shared by spec/71 (plain Lua, libcurl's
-- multi interface) and spec/72 (inside nginx, light threads over
-- cosockets): the same calls, the same assertions on both transports.
--
-- Two halves:
--  * M.run(params) runs one batch where the module runs (plain Lua, or a
--    content handler of a test nginx) and returns plain data (JSON-able):
--    the entries, the events, the on_result order, the on_request events,
--    the time taken, and for some cases single calls to compare with;
--  * M.define(ctx) declares the busted cases; ctx.run(params) gets M.run's
--    table (directly, or from the nginx), ctx.emu() the emulator handle,
--    ctx.busted the busted functions (it, assert).
--
-- No stub anywhere: every request goes to the emulator (nginx).
local M = {}

local FIELDS = { "kind", "code", "status", "retryable", "attempts", "retry_after", "message",
                 "field", "request_id" }

local function plain(err)
  if type(err) ~= "table" then return { lua_error = tostring(err) } end
  local e = {}
  for _, k in ipairs(FIELDS) do e[k] = err[k] end
  return e
end

local function entry(r)
  local e = { robotCode = r.robotCode, ok = r.ok, result = r.result, request_id = r.request_id, keys = {} }
  for k in pairs(r) do e.keys[#e.keys + 1] = k end
  table.sort(e.keys)
  if r.error ~= nil then
    e.error = plain(r.error)
    e.is_error = require("dingtalk.core").is_error(r.error)
  end
  return e
end

-- The argument errors: each call must raise before any byte is sent.
local function bad_calls(c, token)
  local long = string.rep("x", 257)
  return {
    { c.robot.clear_plugins_many, "not a table", { token = token } },
    { c.robot.clear_plugins_many, {}, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok", 5 }, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok", "" }, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok", long }, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok", "a\nb" }, { token = token } },
    { c.robot.clear_plugins_many, { [1] = "dingbot-ok", [3] = "dingbot-ok" }, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok", robotCode = "x" }, { token = token } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, Concurrency = 2 } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, concurrency = 0 } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, concurrency = 257 } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, concurrency = 1.5 } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, rate = 0 } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, rate = "10" } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, on_result = true } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = token, should_stop = "yes" } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, { token = "" } },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, {} },
    { c.robot.clear_plugins_many, { "dingbot-ok" }, "opts" },
  }
end

-- Runs one batch as params says; returns plain data.
function M.run(p)
  local dingtalk = require "dingtalk"
  local core = require "dingtalk.core"
  local clock = core.now
  local offset, slept = 0, {}
  local requests = {}
  local opts = {
    endpoint = p.endpoint, timeout = p.timeout or 5000, retries = p.retries,
    retry_base_delay = p.retry_base_delay, app_key = p.app_key, app_secret = p.app_secret,
  }
  if p.fake_clock then
    -- waits are counted, not waited: the clock jumps instead
    opts.now = function() return clock() + offset end
    opts.sleep = function(s)
      slept[#slept + 1] = s
      offset = offset + s
    end
  end
  opts.on_request = function(ev)
    requests[#requests + 1] = { robotCode = ev.robotCode, attempt = ev.attempt, ok = ev.ok,
                                code = ev.code, path = ev.path, retry_in = ev.retry_in,
                                status = ev.status }
    if p.failing_hooks then error("on_request fails") end
  end
  local c = dingtalk.new(opts)
  local out = { events = {}, order = {}, slept = slept, requests = requests }
  if p.case == "arguments" then
    out.errors = {}
    for k, call in ipairs(bad_calls(c, p.token)) do
      local ok, err = pcall(call[1], call[2], call[3])
      out.errors[k] = ok and { returned = true } or plain(err)
    end
    c:close()
    return out
  end
  local bopts = {
    token = p.token, concurrency = p.concurrency, rate = p.rate,
    on_result = function(r)
      out.order[#out.order + 1] = r.robotCode
      if p.failing_hooks then error("on_result fails") end
    end,
    on_event = function(ev)
      out.events[#out.events + 1] = { kind = ev.kind, reason = ev.reason, seconds = ev.seconds }
      if p.failing_hooks then error("on_event fails") end
    end,
  }
  if p.stop_after then
    bopts.should_stop = function() return #out.order >= p.stop_after end
  end
  local t0 = clock()
  local ok, res
  if p.colon then
    ok, res = pcall(function() return c.robot:clear_plugins_many(p.codes, bopts) end)
  else
    ok, res = pcall(c.robot.clear_plugins_many, p.codes, bopts)
  end
  out.seconds = clock() - t0
  if not ok then
    out.raised = plain(res)
  else
    out.results = {}
    for i, r in ipairs(res) do out.results[i] = entry(r) end
    out.count = #res
  end
  if p.singles then
    -- the same codes one by one, to compare errors field by field
    out.singles = {}
    for i, code in ipairs(p.codes) do
      local sok, v = pcall(c.robot.clear_plugins, { robotCode = code, token = p.token })
      out.singles[i] = sok and { ok = true, result = v } or { ok = false, error = plain(v) }
    end
  end
  c:close()
  return out
end


-------------------------------------------------------------------------------
-- the busted half

local CLEAR = "/v1.0/robot/plugins/clear"
local TOKEN_PATH = "/v1.0/oauth2/accessToken"
local TOKEN = "tok-batch-spec-0123456789abcdef"

function M.define(ctx)
  local it, assert = ctx.busted.it, ctx.busted.assert
  local emulator = ctx.emulator
  local cjson = require "cjson"
  local tags = 0
  local function tag()
    tags = tags + 1
    return ctx.label .. tags .. "x" .. os.time()
  end
  -- a code the emulator clears with success, unique per call
  local function okcode(t, i) return "flaky-500-0-" .. t .. "-" .. i end

  local function run(p)
    p.endpoint = p.endpoint or ctx.emu().url
    if p.token == nil and not p.app_key then p.token = TOKEN end
    local out = ctx.run(p)
    assert.is_table(out, tostring(out))
    return out
  end

  local function received(path)
    local list = {}
    for _, r in ipairs(emulator.requests(ctx.emu())) do
      if r.path == (path or CLEAR) then
        list[#list + 1] = { code = cjson.decode(r.body).robotCode, connection = r.connection,
                            time = r.time, token = r.headers["x-acs-dingtalk-access-token"],
                            requestid = r.requestid }
      end
    end
    return list
  end

  local function count_of(list)
    local n = {}
    for _, r in ipairs(list) do n[r.code] = (n[r.code] or 0) + 1 end
    return n
  end

  it("returns one entry per code, in the order of the codes, of the documented shape", function()
    local t = tag()
    local codes = {}
    for i = 1, 12 do codes[i] = okcode(t, i) end
    codes[5] = "dingbot-false"
    codes[9] = "dingbot-false"
    local out = run{ codes = codes, concurrency = 4 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.equal(12, out.count)
    for i, code in ipairs(codes) do
      local r = out.results[i]
      assert.are.equal(code, r.robotCode)
      assert.are.same({ "ok", "request_id", "result", "robotCode" }, r.keys)
      assert.is_true(r.ok)
      assert.are.equal(code ~= "dingbot-false", r.result, code)
    end
    -- on_result once per code, as each finished
    assert.are.equal(12, #out.order)
    table.sort(out.order)
    local sorted = {}
    for i, code in ipairs(codes) do sorted[i] = code end
    table.sort(sorted)
    assert.are.same(sorted, out.order)
    -- what the server received: each code once, with the token
    local got = received()
    assert.are.equal(12, #got)
    -- a good answer's request id is the one the server gave that code
    local rid = {}
    for _, g in ipairs(got) do rid[g.code] = rid[g.code] or {} rid[g.code][g.requestid] = true end
    for i, code in ipairs(codes) do
      assert.is_true(rid[code][out.results[i].request_id] == true, code)
    end
    local n = count_of(got)
    assert.are.equal(2, n["dingbot-false"])
    for i = 1, 12 do
      if codes[i] ~= "dingbot-false" then assert.are.equal(1, n[codes[i]], codes[i]) end
    end
    for _, r in ipairs(got) do assert.are.equal(TOKEN, r.token) end
    -- the on_request hook fired per attempt, as for single calls
    assert.are.equal(12, #out.requests)
    for _, ev in ipairs(out.requests) do
      assert.are.same({ CLEAR, 1, true, 200 }, { ev.path, ev.attempt, ev.ok, ev.status })
    end
  end)

  it("works as robot:clear_plugins_many too", function()
    local out = run{ codes = { "dingbot-false", okcode(tag(), 1) }, colon = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.same({ false, true }, { out.results[1].result, out.results[2].result })
  end)

  it("a mix of outcomes in one batch: each bot's error is the single call's, none raises", function()
    local t = tag()
    local codes = { okcode(t, 1), "dingbot-false", "dingbot-stopped", "fault-no-permission",
                    "fault-html-502", "fault-not-json", "fault-no-result", "fault-slow-3000",
                    "fault-close-mid-body", "dingbot-unknown-" .. t, okcode(t, 2) }
    local out = run{ codes = codes, concurrency = 4, timeout = 600, retries = 1,
                     retry_base_delay = 1, singles = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.equal(#codes, out.count)
    local want = {
      [1] = { ok = true, result = true }, [2] = { ok = true, result = false },
      [3] = { "api", "invalidRequest.robotIsStop", 1 },
      [4] = { "api", "Forbidden.AccessDenied.AccessTokenPermissionDenied", 1 },
      [5] = { "http", "http.502", 2 },
      [8] = { "transport", "transport.timeout", 2 },
      [10] = { "api", "invalidRequest.robotNotExist", 1 },
      [11] = { ok = true, result = true },
    }
    for i, code in ipairs(codes) do
      local r, s = out.results[i], out.singles[i]
      assert.are.equal(code, r.robotCode)
      if s.ok then
        assert.is_true(r.ok, code .. ": " .. cjson.encode(r))
        assert.are.equal(s.result, r.result, code)
      else
        assert.is_false(r.ok, code)
        assert.is_true(r.is_error, code)
        assert.are.same({ "error", "ok", "robotCode" }, r.keys)
        -- field by field as the single call's error (request ids differ)
        for _, k in ipairs{ "kind", "code", "status", "retryable", "attempts" } do
          assert.are.equal(s.error[k], r.error[k], code .. " " .. k .. ": " .. cjson.encode(r.error)
            .. " vs " .. cjson.encode(s.error))
        end
      end
      local w = want[i]
      if w and w.ok then
        assert.are.same({ w.ok, w.result }, { r.ok, r.result }, code)
      elseif w then
        assert.are.equal(w[1], r.error.kind, code)
        if w[2] then assert.are.equal(w[2], r.error.code, code) end
        assert.are.equal(w[3], r.error.attempts, code)
      end
    end
    -- the kinds not pinned above, as the core maps them
    assert.are.same({ "protocol", "protocol", "transport" },
                    { out.results[6].error.kind, out.results[7].error.kind, out.results[9].error.kind })
    -- retryable failures were tried again (retries = 1): twice each at the server
    local n = count_of(received())
    assert.are.equal(2 * 2, n["fault-html-502"])        -- batch + single call
    assert.are.equal(2 * 2, n["fault-slow-3000"])
    assert.are.equal(2, n["dingbot-stopped"])
  end)

  it("retries throttled codes until they pass, without using up their retries (retries = 0)", function()
    local t = tag()
    local codes = { "flaky-qps-2-" .. t .. "a", okcode(t, 1), "flaky-429-1-" .. t .. "b", okcode(t, 2),
                    "flaky-qps-1-" .. t .. "c", okcode(t, 3) }
    local out = run{ codes = codes, concurrency = 3, retries = 0, fake_clock = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    for i, code in ipairs(codes) do
      assert.are.same({ code, true, true }, { out.results[i].robotCode, out.results[i].ok,
                                             out.results[i].result }, cjson.encode(out.results[i]))
    end
    local n = count_of(received())
    assert.are.equal(3, n[codes[1]])
    assert.are.equal(2, n[codes[3]])
    assert.are.equal(2, n[codes[5]])
    -- the whole batch paused: at least the 429's Retry-After (2 s)
    local pauses, longest = 0, 0
    for _, ev in ipairs(out.events) do
      assert.are.same({ "pause", "throttled" }, { ev.kind, ev.reason })
      pauses = pauses + 1
      if ev.seconds > longest then longest = ev.seconds end
    end
    assert.is_true(pauses >= 1)
    assert.is_true(longest >= 2, "longest pause " .. longest)
    local slept = 0
    for _, s in ipairs(out.slept) do slept = slept + s end
    assert.is_true(slept >= 2 - 0.5, "slept " .. slept)
    -- on_request saw every attempt, the throttled ones marked for another try
    local again = 0
    for _, ev in ipairs(out.requests) do if ev.retry_in then again = again + 1 end end
    assert.are.equal(4, again)
  end)

  it("stops at the monthly quota: the codes after it are not sent, and are not_attempted", function()
    local t = tag()
    local codes = { okcode(t, 1), okcode(t, 2), "fault-quota" }
    for i = 3, 10 do codes[#codes + 1] = okcode(t, i) end
    local out = run{ codes = codes, concurrency = 1 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.same({ true, true }, { out.results[1].result, out.results[2].result })
    local q = out.results[3]
    assert.are.same({ false, "api", "Forbidden.AccessDenied.ApiCountLimitForOrg", 1 },
                    { q.ok, q.error.kind, q.error.code, q.error.attempts })
    for i = 4, #codes do
      local r = out.results[i]
      assert.are.equal(codes[i], r.robotCode)
      assert.is_false(r.ok)
      assert.is_true(r.is_error)
      assert.are.same({ "batch", "batch.not_attempted", false },
                      { r.error.kind, r.error.code, r.error.retryable })
      assert.is_truthy(r.error.message:find("quota", 1, true))
    end
    assert.are.same({ { kind = "stop", reason = "quota" } }, out.events)
    assert.are.equal(#codes, #out.order)
    local got = received()
    assert.are.same({ codes[1], codes[2], "fault-quota" }, { got[1].code, got[2].code, got[3].code })
    assert.are.equal(3, #got)
  end)

  it("stops at the quota with calls in flight: only those are sent after it", function()
    local t = tag()
    local codes = { "fault-quota" }
    for i = 1, 20 do codes[#codes + 1] = okcode(t, i) end
    local out = run{ codes = codes, concurrency = 4 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    local sent, skipped = 0, 0
    for i = 2, #codes do
      local r = out.results[i]
      if r.ok then sent = sent + 1 else
        assert.are.equal("batch.not_attempted", r.error.code)
        skipped = skipped + 1
      end
    end
    assert.is_true(sent <= 3, sent .. " sent after the quota")
    assert.are.equal(20, sent + skipped)
    assert.are.equal(1 + sent, #received())
  end)

  it("pauses the batch for an IP block, says so, and tries the bot again", function()
    local t = tag()
    local codes = { okcode(t, 1), "fault-ip-block", okcode(t, 2) }
    local out = run{ codes = codes, concurrency = 1, fake_clock = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.same({ true, true }, { out.results[1].result, out.results[3].result })
    local b = out.results[2]
    assert.are.same({ false, "http", "http.ip_blocked" }, { b.ok, b.error.kind, b.error.code })
    assert.are.equal(300, b.error.retry_after)
    local first = out.events[1]
    assert.are.same({ kind = "pause", reason = "ip_blocked", seconds = 300 }, first)
    -- the pause was waited (on the injected clock), and the bot sent again
    assert.is_true(out.slept[1] >= 299, cjson.encode(out.slept))
    local n = count_of(received())
    assert.is_true(n["fault-ip-block"] > 1)
    assert.are.equal(b.error.attempts, n["fault-ip-block"])
  end)

  it("should_stop: the calls in flight finish, the rest is not attempted", function()
    local t = tag()
    local codes = {}
    for i = 1, 10 do codes[i] = okcode(t, i) end
    local out = run{ codes = codes, concurrency = 1, stop_after = 3 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    for i = 1, 3 do assert.is_true(out.results[i].result) end
    for i = 4, 10 do
      assert.are.equal("batch.not_attempted", out.results[i].error.code)
    end
    assert.are.equal(3, #received())
    assert.are.same({}, out.events)
  end)

  it("a managed token refused mid-batch is fetched again once for the whole batch", function()
    local t = tag()
    local codes = {}
    for i = 1, 9 do codes[i] = okcode(t, i) end
    -- app-revoke-first: the first token issued is refused by every API
    local out = run{ codes = codes, concurrency = 3, app_key = "app-revoke-first",
                     app_secret = "batch-spec-secret-" .. t, fake_clock = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    for i = 1, 9 do assert.is_true(out.results[i].result, cjson.encode(out.results[i])) end
    assert.are.equal(2, #received(TOKEN_PATH))
    -- the first token's refusals (those in flight), then each code once with the new one
    local fresh = 0
    for _, r in ipairs(received()) do
      if r.token == "at-app-revoke-first-2" then fresh = fresh + 1 end
    end
    assert.are.equal(9, fresh)
  end)

  it("stops when no access token can be had: one fetch, the first code has its error, the rest not attempted",
     function()
    local t = tag()
    local codes = { okcode(t, 1), okcode(t, 2), okcode(t, 3) }
    local out = run{ codes = codes, concurrency = 2, app_key = "bad-key-" .. t,
                     app_secret = "batch-spec-secret-" .. t }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.same({ false, "api", "invalidClientIdOrSecret" },
                    { out.results[1].ok, out.results[1].error.kind, out.results[1].error.code })
    for i = 2, 3 do
      assert.are.equal("batch.not_attempted", out.results[i].error.code)
      assert.is_truthy(out.results[i].error.message:find("access token", 1, true))
    end
    assert.are.same({ { kind = "stop", reason = "token" } }, out.events)
    assert.are.equal(1, #received(TOKEN_PATH))
    assert.are.equal(0, #received())
  end)

  it("runs at most `concurrency` requests at once, over at most that many connections", function()
    local t = tag()
    local codes = {}
    for i = 1, 24 do codes[i] = okcode(t, i) end
    if ctx.stats and ctx.stats() then
      -- the slow answers of earlier cases (their callers timed out long
      -- ago) may still be running at the emulator: let them end first
      local socket = require "socket"
      local deadline = socket.gettime() + 10
      while (ctx.stats().in_flight or 0) > 0 and socket.gettime() < deadline do socket.sleep(0.05) end
      emulator.reset(ctx.emu())
    end
    emulator.configure(ctx.emu(), { delay_ms = 100 })
    local ok, out = pcall(run, { codes = codes, concurrency = 3 })
    emulator.configure(ctx.emu(), { delay_ms = 0 })
    assert(ok, out)
    assert.is_nil(out.raised, cjson.encode(out.raised))
    local conns = {}
    for _, r in ipairs(received()) do conns[r.connection] = true end
    local distinct = 0
    for _ in pairs(conns) do distinct = distinct + 1 end
    assert.is_true(distinct <= 3, distinct .. " connections")
    -- concurrent all the same: 24 answers of 100 ms in well under 24 x 100 ms
    assert.is_true(out.seconds < 1.9, out.seconds .. " s")
    if ctx.stats then
      local st = ctx.stats()
      if st and st.max_in_flight then assert.is_true(st.max_in_flight <= 3, cjson.encode(st)) end
    end
  end)

  it("paces at `rate` requests per second, without bursts", function()
    local t = tag()
    local codes = {}
    for i = 1, 20 do codes[i] = okcode(t, i) end
    local out = run{ codes = codes, concurrency = 8, rate = 10 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.is_true(out.seconds >= 1.8, out.seconds .. " s")
    assert.is_true(out.seconds < 10, out.seconds .. " s")
    local got = received()
    assert.are.equal(20, #got)
    -- any 6 consecutive requests span at least ~5 intervals of 0.1 s
    for k = 1, #got - 5 do
      assert.is_true(got[k + 5].time - got[k].time >= 0.4,
                     "burst at request " .. k .. ": " .. (got[k + 5].time - got[k].time) .. " s for 6")
    end
  end)

  it("paces from now after a slow answer: no burst to catch up", function()
    local t = tag()
    local codes = { "fault-slow-800" }
    for i = 1, 10 do codes[#codes + 1] = okcode(t, i) end
    local out = run{ codes = codes, concurrency = 1, rate = 10 }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    local got = received()
    assert.are.equal(11, #got)
    for k = 2, #got - 5 do
      assert.is_true(got[k + 5].time - got[k].time >= 0.4,
                     "burst at request " .. k .. ": " .. (got[k + 5].time - got[k].time) .. " s for 6")
    end
  end)

  it("under the platform's per-second limit (the emulator's), without rate: nothing lost", function()
    local cfg = emulator.configure(ctx.emu(), { rate_limit = 10 })
    if cfg.rate_limit ~= 10 then
      io.stderr:write("\n(this emulator has no rate_limit: case not run)\n")
      return
    end
    local t = tag()
    local codes = {}
    for i = 1, 30 do codes[i] = okcode(t, i) end
    local ok, out = pcall(run, { codes = codes, concurrency = 8, retries = 0 })
    emulator.configure(ctx.emu(), { rate_limit = 0 })
    assert(ok, out)
    assert.is_nil(out.raised, cjson.encode(out.raised))
    for i, code in ipairs(codes) do
      assert.are.same({ code, true, true }, { out.results[i].robotCode, out.results[i].ok,
                                             out.results[i].result }, cjson.encode(out.results[i]))
    end
    local got = received()
    local n = count_of(got)
    for _, code in ipairs(codes) do assert.is_true(n[code] >= 1) end
    -- the refusals slowed the batch down (pauses said), and it ended
    assert.is_true(#out.events >= 1)
    assert.is_true(out.seconds < 30, out.seconds .. " s")
  end)

  it("refuses bad arguments before anything is sent", function()
    local out = run{ case = "arguments" }
    local want = {
      { "argument.type", "codes" }, { "argument.empty", "codes" }, { "argument.type", "codes[2]" },
      { "argument.empty", "codes[2]" }, { "argument.too_long", "codes[2]" },
      { "argument.control_char", "codes[2]" }, { "argument.type", "codes" }, { "argument.type", "codes" },
      { "argument.unknown_key", "Concurrency" }, { "argument.option", "concurrency" },
      { "argument.option", "concurrency" }, { "argument.option", "concurrency" },
      { "argument.option", "rate" }, { "argument.option", "rate" }, { "argument.option", "on_result" },
      { "argument.option", "should_stop" }, { "argument.empty", "token" }, { "argument.missing", "token" },
      { "argument.not_table", "(arguments)" },
    }
    assert.are.equal(#want, #out.errors)
    for k, w in ipairs(want) do
      local e = out.errors[k]
      assert.are.same({ "argument", w[1], w[2] }, { e.kind, e.code, e.field }, k .. ": " .. cjson.encode(e))
    end
    assert.is_truthy(out.errors[9].message:find("did you mean concurrency?", 1, true))
    assert.are.equal(0, #emulator.requests(ctx.emu()))
  end)

  it("failing hooks never fail the batch", function()
    local t = tag()
    local out = run{ codes = { okcode(t, 1), "flaky-qps-1-" .. t, "dingbot-stopped" }, failing_hooks = true,
                     fake_clock = true }
    assert.is_nil(out.raised, cjson.encode(out.raised))
    assert.are.same({ true, true, false }, { out.results[1].ok, out.results[2].ok, out.results[3].ok })
    assert.are.equal(3, #out.order)
  end)
end

return M
