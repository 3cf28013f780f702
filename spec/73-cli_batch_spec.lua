-- `dingtalk robot clear-plugins` over many bots, run as a process against
-- the emulator: outcomes and exit codes, the journal field by field and the
-- resume, Ctrl-C mid-batch, the concurrency bound and --rate against the
-- emulator's per-second limit, all counted at the emulator.
local cjson = require "cjson"
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local shell = require "spec.helpers.shell"

local q = shell.q
local TOKEN = "tok-batch-spec-Wm3-0123456789abcdef"
local REQUEST_ID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local TIME = "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$"

local clih = require "spec.helpers.cli"
local read, write, lines, summary, command = clih.read, clih.write, clih.lines, clih.summary, clih.command

local function json_lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = cjson.decode(l) end
  return t
end

local function by_code(list)
  local t = {}
  for _, r in ipairs(list) do
    assert.is_nil(t[r.robotCode], "one line per code: " .. r.robotCode)
    t[r.robotCode] = r
  end
  return t
end

-- seconds since the epoch of a journal time (UTC)
local function epoch(s)
  local y, mo, d, h, mi, se = s:match(TIME)
  assert(y, "not a UTC time: " .. tostring(s))
  local t = os.time{ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
                     min = tonumber(mi), sec = tonumber(se), isdst = false }
  -- os.time reads local time: correct by the offset of the local zone
  local now = os.time()
  return t + os.difftime(now, os.time(os.date("!*t", now)))
end

local runner = clih.new()
local tmp, outputs, run = runner.tmp, runner.outputs, runner.run

-- the journal's text (searched for the token at the end too)
local function journal()
  local s = read(tmp .. ".journal")
  outputs[#outputs + 1] = s
  return s
end

local function codes_file(codes)
  write(tmp .. ".codes", table.concat(codes, "\n") .. "\n")
  return tmp .. ".codes"
end

describe("dingtalk robot clear-plugins, many bots", function()
  local emu, env

  setup(function()
    emu = emulator.start()
    env = { DINGTALK_ENDPOINT = emu.url, DINGTALK_ACCESS_TOKEN = TOKEN }
  end)
  teardown(function()
    runner.cleanup{ ".codes", ".journal", ".pid" }
    if emu then emulator.stop(emu) end
  end)
  before_each(function()
    emulator.config(emu, { delay_ms = 0, rate_limit = 0 })
    emulator.reset(emu)
    os.remove(tmp .. ".journal")
  end)

  -- robotCode -> number of clear requests the emulator received
  local function sent()
    local t, n = {}, 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == "/v1.0/robot/plugins/clear" then
        local code = cjson.decode(r.body).robotCode
        t[code] = (t[code] or 0) + 1
        n = n + 1
      end
    end
    return t, n
  end

  -- the request ids the emulator answered for a code
  local function request_ids(code)
    local t = {}
    for _, r in ipairs(emulator.requests(emu)) do
      if r.body:find(code, 1, true) then t[r.requestid] = true end
    end
    return t
  end

  it("a mix of outcomes: one JSON line each, the summary, and the worst exit code", function()
    local tag = tostring(os.time()) .. math.random(1000, 9999)
    local codes = { "dingbot-plugins-m1", "dingbot-false", "dingbot-stopped", "fault-no-permission",
                    "flaky-500-1-mix" .. tag, "dingbot-plugins-m2", "fault-system-error" }
    local rc, out, err = run({ "robot", "clear-plugins", "--from", codes_file(codes), "--json",
                               "--concurrency", "3", "--retries", "1" }, env)
    assert.are.equal(1, rc, err)
    local r = by_code(json_lines(out))
    assert.are.same({ robotCode = "dingbot-plugins-m1", ok = true, outcome = "cleared", result = true },
                    r["dingbot-plugins-m1"])
    assert.are.same({ robotCode = "dingbot-false", ok = true, outcome = "empty", result = false },
                    r["dingbot-false"])
    assert.are.same({ "failed", false, "api", "invalidRequest.robotIsStop", 400, false },
                    { r["dingbot-stopped"].outcome, r["dingbot-stopped"].ok, r["dingbot-stopped"].error.kind,
                      r["dingbot-stopped"].error.code, r["dingbot-stopped"].error.status,
                      r["dingbot-stopped"].error.retryable })
    assert.are.equal("Forbidden.AccessDenied.AccessTokenPermissionDenied", r["fault-no-permission"].error.code)
    assert.are.equal("cleared", r["flaky-500-1-mix" .. tag].outcome)   -- retried once
    assert.are.same({ "failed", "system.error", 500, 2 },
                    { r["fault-system-error"].outcome, r["fault-system-error"].error.code,
                      r["fault-system-error"].error.status, r["fault-system-error"].error.attempts })
    assert.matches(REQUEST_ID, r["dingbot-stopped"].error.request_id)
    assert.is_true(request_ids("dingbot-stopped")[r["dingbot-stopped"].error.request_id])
    assert.are.same({ "cleared 3", "already empty 1",
                      "failed 3 (Forbidden.AccessDenied.AccessTokenPermissionDenied 1, invalidRequest.robotIsStop 1, "
                      .. "system.error 1)", "not attempted 0" }, summary(err))
    assert.is_nil(err:find("\r", 1, true), "no progress display without a terminal")
    local s, n = sent()
    assert.are.equal(#codes + 2, n)   -- the flaky one and the system error were each sent twice
    assert.are.equal(2, s["fault-system-error"])

    -- a transport failure is the worst (3); all cleared is 0
    rc = run({ "robot", "clear-plugins", "--robot-code", "dingbot-plugins-m3", "--robot-code",
               "fault-close-mid-body", "--robot-code", "dingbot-stopped", "--retries", "0" }, env)
    assert.are.equal(3, rc)
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-plugins-m4", "--robot-code",
                         "dingbot-plugins-m5" }, env)
    assert.are.equal(0, rc, err)
    assert.are.same({ "dingbot-plugins-m4: cleared", "dingbot-plugins-m5: cleared" },
                    (function() local l = lines(out) table.sort(l) return l end)())
    assert.are.same({ "cleared 2", "already empty 0", "failed 0", "not attempted 0" }, summary(err))
  end)

  it("--journal: one line per finished code, field by field; a second run resends only what did not finish",
     function()
    local codes = {}
    for i = 1, 12 do codes[#codes + 1] = "dingbot-plugins-j" .. i end
    codes[#codes + 1] = "dingbot-false"
    codes[#codes + 1] = "dingbot-stopped"
    codes[#codes + 1] = "fault-system-error"
    local file = codes_file(codes)
    local t0 = os.time()
    local rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--journal", tmp .. ".journal",
                               "--retries", "0", "--concurrency", "4" }, env)
    local t1 = os.time()
    assert.are.equal(1, rc, err)
    assert.are.equal(13, #lines(out))
    local raw = journal()
    assert.matches("\n$", raw)
    local j = by_code(json_lines(raw))
    assert.are.equal(#codes, #lines(raw))
    for i = 1, 12 do
      local e = j["dingbot-plugins-j" .. i]
      local keys = {}
      for k in pairs(e) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.are.same({ "outcome", "request_id", "robotCode", "time" }, keys)
      assert.are.equal("cleared", e.outcome)
      assert.is_true(request_ids(e.robotCode)[e.request_id], "the request id the emulator gave")
      local at = epoch(e.time)
      assert.is_true(at >= t0 - 1 and at <= t1 + 1, e.time)
    end
    assert.are.equal("empty", j["dingbot-false"].outcome)
    for _, c in ipairs{ { "dingbot-stopped", "invalidRequest.robotIsStop" },
                        { "fault-system-error", "system.error" } } do
      local e = j[c[1]]
      assert.are.same({ "failed", c[2] }, { e.outcome, e.code })
      assert.matches(REQUEST_ID, e.request_id)
      assert.is_true(request_ids(c[1])[e.request_id], "the request id the emulator gave")
      assert.matches(TIME, e.time)
    end

    -- resume: only the failed codes are sent again; the journal grows by them
    emulator.reset(emu)
    rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--journal", tmp .. ".journal",
                         "--retries", "0", "--json" }, env)
    assert.are.equal(1, rc)
    local s, n = sent()
    assert.are.same({ ["dingbot-stopped"] = 1, ["fault-system-error"] = 1 }, s)
    assert.are.equal(2, n)
    local o = by_code(json_lines(out))
    assert.are.same({ robotCode = "dingbot-plugins-j1", ok = true, outcome = "skipped" }, o["dingbot-plugins-j1"])
    assert.are.equal("skipped", o["dingbot-false"].outcome)
    assert.are.equal("failed", o["dingbot-stopped"].outcome)
    assert.are.same({ "cleared 0", "already empty 0",
                      "failed 2 (invalidRequest.robotIsStop 1, system.error 1)", "not attempted 0", "skipped 13" },
                    summary(err))
    assert.are.equal(#codes + 2, #lines(journal()))

    -- a last line cut short (a crash) is ignored, said once, and the next line starts afresh
    local f = assert(io.open(tmp .. ".journal", "ab"))
    f:write('{"robotCode":"dingbot-stopped","outc')
    f:close()
    emulator.reset(emu)
    rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--journal", tmp .. ".journal",
                         "--retries", "0" }, env)
    assert.are.equal("", out)   -- both failed again: nothing on stdout
    assert.are.equal(1, rc)
    assert.matches("1 unreadable journal lines? ignored", err)
    local _, n2 = sent()
    assert.are.equal(2, n2)
    local last = lines(journal())
    assert.are.equal(#codes + 2 + 1 + 2, #last)
    assert.has_no.errors(function() cjson.decode(last[#last]) end)
    assert.has_no.errors(function() cjson.decode(last[#last - 1]) end)
  end)

  it("Ctrl-C finishes the calls in flight, journals every code, exits 130 and sends nothing more", function()
    emulator.config(emu, { delay_ms = 300 })
    local codes = {}
    for i = 1, 40 do codes[#codes + 1] = "dingbot-plugins-c" .. i end
    local file = codes_file(codes)
    -- job control on (set -m): a background job keeps SIGINT's default
    os.remove(tmp .. ".rc")
    os.remove(tmp .. ".pid")
    os.execute("sh -c " .. q("set -m 2>/dev/null; " .. command({ "robot", "clear-plugins", "--from", file, "--journal",
                                                    tmp .. ".journal", "--concurrency", "4" }, env)
               .. " </dev/null >" .. q(tmp .. ".out") .. " 2>" .. q(tmp .. ".err") .. " & echo $! >"
               .. q(tmp .. ".pid") .. "; wait $!; echo $? >" .. q(tmp .. ".rc")) .. " &")
    local deadline = socket.gettime() + 10
    -- wait until the batch is under way: some codes done, more in flight
    while #lines(journal()) < 4 and socket.gettime() < deadline do socket.sleep(0.05) end
    local pid = tonumber(read(tmp .. ".pid"))
    assert.is_number(pid)
    local before = emulator.stats(emu)
    assert.is_true(before.in_flight > 0, "calls in flight when SIGINT comes")
    os.execute("kill -INT " .. pid)
    while read(tmp .. ".rc") == "" and socket.gettime() < deadline do socket.sleep(0.05) end
    local rc = tonumber(read(tmp .. ".rc"))
    local err = read(tmp .. ".err")
    outputs[#outputs + 1] = err
    outputs[#outputs + 1] = read(tmp .. ".out")
    assert.are.equal(130, rc, err)
    socket.sleep(0.4)   -- longer than the delay: anything sent after the exit would show now
    local st = emulator.stats(emu)
    assert.are.equal(0, st.in_flight)
    local s, n = sent()
    local j = by_code(json_lines(journal()))
    local cleared, not_attempted = 0, 0
    for _, code in ipairs(codes) do
      local e = assert(j[code], "every code is in the journal: " .. code)
      if e.outcome == "cleared" then
        cleared = cleared + 1
        assert.are.equal(1, s[code], code)
      else
        assert.are.equal("not_attempted", e.outcome, code)
        assert.is_nil(s[code], "not attempted, not sent: " .. code)
        not_attempted = not_attempted + 1
      end
    end
    -- the calls in flight at SIGINT finished (cleared), and nothing else was sent
    assert.are.equal(cleared, n)
    assert.is_true(cleared >= 4 and not_attempted >= 1, cleared .. " cleared, " .. not_attempted .. " not")
    assert.are.equal(st.requests, n)
    assert.are.same({ "cleared " .. cleared, "already empty 0", "failed 0", "not attempted " .. not_attempted },
                    summary(err))
    assert.matches("%(interrupted%):\n", err)
    -- the resume finishes the rest, and only the rest
    emulator.config(emu, { delay_ms = 0 })
    emulator.reset(emu)
    local out
    rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--journal", tmp .. ".journal" }, env)
    assert.are.equal(0, rc, err)
    assert.are.equal(not_attempted, #lines(out))
    local _, left = sent()
    assert.are.equal(not_attempted, left)
  end)

  it("--concurrency bounds the calls in flight and the connections, counted at the emulator", function()
    emulator.config(emu, { delay_ms = 100 })
    local codes = {}
    for i = 1, 24 do codes[#codes + 1] = "dingbot-plugins-k" .. i end
    local rc, _, err = run({ "robot", "clear-plugins", "--from", codes_file(codes), "--concurrency", "4" }, env)
    assert.are.equal(0, rc, err)
    local st = emulator.stats(emu)
    assert.are.same({ 4, 24 }, { st.max_in_flight, st.robot_requests })
    assert.is_true(st.connections <= 4, st.connections .. " connections")
    -- the default is 8
    emulator.reset(emu)
    rc, _, err = run({ "robot", "clear-plugins", "--from", codes_file(codes) }, env)
    assert.are.equal(0, rc, err)
    st = emulator.stats(emu)
    assert.are.equal(8, st.max_in_flight)
    assert.is_true(st.connections <= 8, st.connections .. " connections")
  end)

  it("the quota answer stops the batch: the codes left are not attempted nor sent, said on stderr", function()
    local codes = { "dingbot-plugins-q1", "dingbot-plugins-q2", "fault-quota" }
    for i = 3, 10 do codes[#codes + 1] = "dingbot-plugins-q" .. i end
    local rc, out, err = run({ "robot", "clear-plugins", "--from", codes_file(codes), "--concurrency", "1",
                               "--json", "--journal", tmp .. ".journal" }, env)
    assert.are.equal(1, rc, err)
    local r = by_code(json_lines(out))
    assert.are.equal(#codes, #json_lines(out))
    assert.are.equal("cleared", r["dingbot-plugins-q2"].outcome)
    assert.are.same({ "failed", "Forbidden.AccessDenied.ApiCountLimitForOrg" },
                    { r["fault-quota"].outcome, r["fault-quota"].error.code })
    for i = 3, 10 do
      local e = r["dingbot-plugins-q" .. i]
      assert.are.same({ false, "not_attempted", "batch", "batch.not_attempted" },
                      { e.ok, e.outcome, e.error.kind, e.error.code })
    end
    local s, n = sent()
    assert.are.equal(3, n)
    assert.is_nil(s["dingbot-plugins-q3"])
    assert.matches("monthly call quota", err)
    assert.are.same({ "cleared 2", "already empty 0", "failed 1 (Forbidden.AccessDenied.ApiCountLimitForOrg 1)",
                      "not attempted 8" }, summary(err))
    local j = by_code(json_lines(journal()))
    assert.are.equal("not_attempted", j["dingbot-plugins-q10"].outcome)
    assert.are.equal("batch.not_attempted", j["dingbot-plugins-q10"].code)
  end)

  it("throttling and the IP block pause the batch, said on stderr, and lose nothing", function()
    local tag = tostring(os.time()) .. math.random(1000, 9999)
    -- one run each: a pause already under way is not said again
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "flaky-qps-2-t" .. tag,
                               "--robot-code", "dingbot-plugins-t1", "--concurrency", "2" }, env)
    assert.are.equal(0, rc, err)
    assert.are.equal(2, #lines(out))
    assert.matches("^dingtalk: the platform throttles this app: pausing the batch for [%d.]+ s\n", err)
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "flaky-ipblock-1-t" .. tag,
                         "--robot-code", "dingbot-plugins-t2", "--concurrency", "2" }, env)
    assert.are.equal(0, rc, err)
    assert.are.equal(2, #lines(out))
    assert.matches("^dingtalk: the platform blocked this IP address %(http%.ip_blocked%): pausing the batch "
                   .. "for 1%.0 s\n", err)
    local s = sent()
    assert.are.equal(3, s["flaky-qps-2-t" .. tag])
    assert.are.equal(2, s["flaky-ipblock-1-t" .. tag])
  end)

  it("--rate 20 against the emulator's limit of 20 a second: under 2 % refused; without it nothing lost #slow",
     function()
    emulator.config(emu, { rate_limit = 20 })
    local codes = {}
    for i = 1, 200 do codes[#codes + 1] = "dingbot-plugins-r" .. i end
    local file = codes_file(codes)
    local t0 = socket.gettime()
    local rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--rate", "20" }, env)
    local took = socket.gettime() - t0
    assert.are.equal(0, rc, err)
    assert.are.equal(200, #lines(out))
    local st = emulator.stats(emu)
    assert.is_true(st.refused < 0.02 * st.robot_requests,
                   st.refused .. " refused of " .. st.robot_requests)
    assert.is_true(took > 8, "paced: " .. took .. " s")   -- 200 at 20/s is ~10 s
    -- without --rate: refused answers, each retried, every code cleared
    emulator.reset(emu)
    rc, out, err = run({ "robot", "clear-plugins", "--from", file, "--json" }, env)
    assert.are.equal(0, rc, err)
    local r = json_lines(out)
    assert.are.equal(200, #r)
    for _, e in ipairs(r) do assert.are.equal("cleared", e.outcome, e.robotCode) end
    st = emulator.stats(emu)
    assert.are.equal(200 + st.refused, st.robot_requests)
  end)

  it("on a terminal: one progress line on stderr redrawn with \\r; without one, none", function()
    emulator.config(emu, { delay_ms = 20 })
    local codes = {}
    for i = 1, 30 do codes[#codes + 1] = "dingbot-plugins-p" .. i end
    local file = codes_file(codes)
    -- script(1) gives the command a pseudo-terminal; stdout goes to a file
    local inner = command({ "robot", "clear-plugins", "--from", file, "--concurrency", "2" }, env)
      .. " >" .. q(tmp .. ".out")
    local rc, text = shell.sh("script -qefc " .. q(inner) .. " /dev/null </dev/null")
    outputs[#outputs + 1] = text
    assert.are.equal(0, rc, text)
    assert.matches("\r%d+/30 done, [%d.]+/s, 0 failed, ETA [%d:?]+\27%[K", text)
    assert.matches("\r30/30 done", text)
    assert.matches("\r\27%[Kdingtalk: 30 codes in", text)   -- cleared before the summary
    assert.are.equal(30, #lines(read(tmp .. ".out")))
    assert.is_nil(read(tmp .. ".out"):find("\r", 1, true))
  end)

  it("in-process: sys.isatty turns the progress display on; a stderr given alone is no terminal", function()
    local cli = require "dingtalk.cli"
    local function writer(t) return { write = function(_, ...) for _, x in ipairs{ ... } do t[#t + 1] = x end end } end
    for _, tty in ipairs{ true, false, "unset" } do
      local out, err = {}, {}
      local rc = cli.main({ "robot", "clear-plugins", "--robot-code", "dingbot-plugins-i1", "--robot-code",
                            "dingbot-plugins-i2" }, {
        getenv = function(k) return env[k] end, stdout = writer(out), stderr = writer(err),
        isatty = tty ~= "unset" and tty or nil })
      assert.are.equal(0, rc)
      local e = table.concat(err)
      if tty == true then
        assert.matches("\r2/2 done, [%d.]+/s, 0 failed, ETA [%d:]+\27%[K", e)
      else
        assert.is_nil(e:find("\r", 1, true), e)
      end
      assert.are.same({ "cleared 2", "already empty 0", "failed 0", "not attempted 0" }, summary(e))
    end
  end)

  it("usage: the batch options are for clear-plugins and checked before anything is sent", function()
    for _, case in ipairs{
      { { "robot", "clear-plugins", "--robot-code", "x", "--concurrency", "0" }, "%-%-concurrency must be" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--concurrency", "257" }, "%-%-concurrency must be" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--rate", "-1" }, "%-%-rate must be" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--rate", "fast" }, "%-%-rate must be" },
      { { "robot", "query-plugins", "--robot-code", "x", "--journal", "j" }, "%-%-journal is for clear%-plugins" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--journal", "/nonexistent/dir/j" }, "cannot write" },
    } do
      local rc, out, err = run(case[1], env)
      assert.are.equal(2, rc, err)
      assert.are.equal("", out)
      assert.matches(case[2], err)
    end
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("no output nor journal carried the token", function()
    assert.is_true(#outputs > 10)
    local s, piece = require("spec.helpers.reachable").leak(outputs, TOKEN)
    assert.is_nil(s, tostring(piece) .. " in: " .. tostring(s))
  end)
end)
