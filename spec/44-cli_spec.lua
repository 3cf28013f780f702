-- The dingtalk command, run as a process (bin/dingtalk under the same
-- interpreter as the suite) against the emulator: output, exit codes,
-- requests counted on the server, and no secret in any output.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"

local TOKEN = "tok-cli-spec-Hq8-0123456789abcdef"
local SECRET = "sec-cli-spec-Zr4-app-secret-abcdef"

local clih = require "spec.helpers.cli"
local valid_utf8, json_lines, summary = clih.valid_utf8, clih.json_lines, clih.summary

-- stdout of a --json run: exactly one JSON document, one line, valid UTF-8
local function json_doc(out)
  local ok, at = valid_utf8(out)
  assert(ok, "invalid UTF-8 at byte " .. tostring(at) .. " of: " .. out)
  assert.matches("^[^\n]+\n$", out)
  return cjson.decode(out)
end

local runner = clih.new()
local tmp, outputs, run = runner.tmp, runner.outputs, runner.run   -- outputs: searched for secrets at the end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("dingtalk command", function()
  local emu, env

  setup(function()
    emu = emulator.start()
    env = { DINGTALK_ENDPOINT = emu.url, DINGTALK_ACCESS_TOKEN = TOKEN }
  end)
  teardown(function()
    runner.cleanup{ ".json", ".codes" }
    if emu then emulator.stop(emu) end
  end)
  before_each(function() emulator.reset(emu) end)

  local function seen(path)
    local n = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == path then n = n + 1 end
    end
    return n
  end

  it("clears several bots and reports each", function()
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok",
                               "--robot-code", "dingbot-plugins-a" }, env)
    assert.are.equal(0, rc, err)
    local got = lines(out)
    table.sort(got)   -- in the order they finish
    assert.are.same({ "dingbot-ok: cleared", "dingbot-plugins-a: cleared" }, got)
    assert.are.same({ "cleared 2", "already empty 0", "failed 0", "not attempted 0" }, summary(err))
    assert.are.equal(2, seen("/v1.0/robot/plugins/clear"))
    for _, r in ipairs(emulator.requests(emu)) do
      assert.are.equal(TOKEN, r.headers["x-acs-dingtalk-access-token"])
    end
  end)

  it("reads codes from a file, one per line, and exits 1 when the platform refused one", function()
    local f = assert(io.open(tmp .. ".codes", "wb"))
    f:write("# bots to clean\ndingbot-ok\n\n  dingbot-stopped  \ndingbot-plugins-b\n")
    f:close()
    local rc, out, err = run({ "robot", "clear-plugins", "--from", tmp .. ".codes" }, env)
    assert.are.equal(1, rc)
    local got = lines(out)
    table.sort(got)
    assert.are.same({ "dingbot-ok: cleared", "dingbot-plugins-b: cleared" }, got)
    assert.are.same({ "cleared 2", "already empty 0", "failed 1 (invalidRequest.robotIsStop 1)",
                      "not attempted 0" }, summary(err))
    local e = lines(err)
    assert.are.equal(1 + 5, #e, "one line per error, then the summary")
    assert.matches("^dingtalk: dingbot%-stopped: invalidRequest%.robotIsStop %(HTTP 400%): .+ %[request [%w%-]+%]$",
                   e[1])
    assert.are.equal(3, seen("/v1.0/robot/plugins/clear"))
  end)

  it("--from - reads stdin; --json gives one JSON line per code for scripts", function()
    local rc, out = run({ "robot", "clear-plugins", "--from", "-", "--json" }, env, "dingbot-ok\nfault-system-error\n")
    assert.are.equal(1, rc)
    local docs = json_lines(out)
    assert.are.equal(2, #docs)
    local by = {}
    for _, d in ipairs(docs) do by[d.robotCode] = d end
    assert.are.same({ robotCode = "dingbot-ok", ok = true, outcome = "cleared", result = true }, by["dingbot-ok"])
    local r2 = by["fault-system-error"]
    assert.are.equal(false, r2.ok)
    assert.are.equal("failed", r2.outcome)
    -- (a throttling answer would pause the batch and be tried again: spec/73)
    assert.are.same({ "api", "system.error", 500, true, 4 },
                    { r2.error.kind, r2.error.code, r2.error.status, r2.error.retryable, r2.error.attempts })
    assert.are.equal(1 + 4, seen("/v1.0/robot/plugins/clear"))   -- the retryable error was retried
  end)

  it("exits 3 on a transport failure", function()
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok", "--retries", "0",
                               "--endpoint", "http://127.0.0.1:1" }, env)
    assert.are.equal(3, rc)
    assert.are.equal("", out)
    assert.matches("^dingtalk: dingbot%-ok: transport%.connect: ", err)
    assert.are.equal(1, #lines(err))
  end)

  it("queries and sets quick entries", function()
    local bot = "dingbot-plugins-cli" .. os.time()
    local entries = { { name = "Docs", icon = "@lALPdocs", pcUrl = "https://example.com/docs" },
                      { name = "Help", icon = "@lALPhelp" } }
    local f = assert(io.open(tmp .. ".json", "wb")); f:write(cjson.encode(entries)); f:close()
    local rc, out, err = run({ "robot", "set-plugins", "--robot-code", bot, "--file", tmp .. ".json" }, env)
    assert.are.equal(0, rc, err)
    assert.are.same({ bot .. ": set 2 quick entries" }, lines(out))
    rc, out = run({ "robot", "query-plugins", "--robot-code", bot }, env)
    assert.are.equal(0, rc)
    assert.are.same({ bot .. ": 2 quick entries", "  Docs\t@lALPdocs\thttps://example.com/docs\t",
                      "  Help\t@lALPhelp\t\t" }, lines(out))
    rc, out = run({ "robot", "query-plugins", "--robot-code", bot, "--json" }, env)
    assert.are.equal(0, rc)
    assert.are.same(entries, cjson.decode(out).results[1].pluginInfoList)
    run({ "robot", "clear-plugins", "--robot-code", bot }, env)
    rc, out = run({ "robot", "query-plugins", "--robot-code", bot, "--json" }, env)
    assert.are.equal(0, rc)
    assert.matches('"pluginInfoList":%[%]', out)   -- an empty array, not {}
    assert.are.same({ 1, 3, 1 }, { seen("/v1.0/robot/plugins/set"), seen("/v1.0/robot/plugins/query"),
                                   seen("/v1.0/robot/plugins/clear") })
  end)

  it("set-plugins refuses bad entries before sending (exit 2)", function()
    local f = assert(io.open(tmp .. ".json", "wb")); f:write('[{"name":"no icon"}]'); f:close()
    local rc, _, err = run({ "robot", "set-plugins", "--robot-code", "dingbot-ok", "--file", tmp .. ".json" }, env)
    assert.are.equal(2, rc)
    assert.matches("pluginInfoList%[1%]%.icon", err)
    f = assert(io.open(tmp .. ".json", "wb")); f:write("not json"); f:close()
    rc, _, err = run({ "robot", "set-plugins", "--robot-code", "dingbot-ok", "--file", tmp .. ".json" }, env)
    assert.are.equal(2, rc)
    assert.matches("is not valid JSON", err)
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("fetches the token from DINGTALK_APP_KEY/DINGTALK_APP_SECRET; --verbose logs each attempt", function()
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "flaky-500-1-cli" .. os.time(),
                               "--verbose" },
                             { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = "app-cli",
                               DINGTALK_APP_SECRET = SECRET })
    assert.are.equal(0, rc, err)
    assert.matches(": cleared\n$", out)
    local log = lines(err)
    assert.are.equal(3, #log)
    assert.matches("^dingtalk: POST /v1%.0/oauth2/accessToken attempt 1 %-> 200 in %d+ ms %[request [%w%-]+%]$", log[1])
    assert.matches("^dingtalk: POST /v1%.0/robot/plugins/clear attempt 1 %-> 500 system%.error in %d+ ms "
                   .. "%[request [%w%-]+%], retrying in %d+%.%d+ s$", log[2])
    assert.matches("attempt 2 %-> 200", log[3])
    assert.are.equal(1, seen("/v1.0/oauth2/accessToken"))
    assert.are.equal(2, seen("/v1.0/robot/plugins/clear"))
  end)

  it("a bad app secret is a refusal (exit 1) that does not show the secret", function()
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok", "--json" },
                             { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = "app-echo-secret",
                               DINGTALK_APP_SECRET = SECRET })
    assert.are.equal(1, rc)
    assert.matches("invalidClientIdOrSecret", out)
    assert.matches("invalidClientIdOrSecret", err)
    assert.matches("%[redacted%]", err)
  end)

  local usage_cases = {
    { {}, "no command" },
    { { "robot" }, "robot needs a command" },
    { { "robot", "wipe" }, "unknown command robot wipe" },
    { { "robot", "clear-plugins" }, "no robot code" },
    { { "robot", "clear-plugins", "--robot-code" }, "needs a value" },
    { { "robot", "clear-plugins", "--bogus", "x" }, "unknown option %-%-bogus" },
    { { "robot", "set-plugins", "--robot-code", "x" }, "needs %-%-file" },
    { { "robot", "clear-plugins", "--robot-code", "x", "--retries", "many" }, "%-%-retries must be" },
    { { "robot", "clear-plugins", "--robot-code", "x", "--endpoint", "ftp://x" }, "endpoint",
      { "argument", "argument.endpoint", "endpoint" } },
    { { "robot", "clear-plugins", "--robot-code", "x", "--from", "/nonexistent/codes" }, "cannot read" },
    { { "robot", "clear-plugins", "--robot-code", "x", "--verbose=yes" }, "%-%-verbose takes no value" },
    { { "robot", "clear-plugins", "--robot-code", "x", "--timeout", "1", "--timeout", "2" }, "given twice" },
    { { "robot", "query-plugins", "--robot-code", "x", "--from", "f" }, "%-%-from is for clear%-plugins" },
    { { "robot", "clear-plugins", "--robot-code", "x", "-q" }, "unknown option %-q" },
  }
  for _, case in ipairs(usage_cases) do
    it("usage error: " .. table.concat(case[1], " "), function()
      local rc, out, err = run(case[1], env)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.are.equal(1, #lines(err))
      assert.matches(case[2], err)
      assert.matches("%(see dingtalk %-%-help%)$", lines(err)[1])
    end)

    -- --json first: the case's own last word may be an option waiting for a value
    it("usage error, --json: one JSON error document: " .. table.concat(case[1], " "), function()
      local args = { "--json" }
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      local rc, out, err = run(args, env)
      assert.are.equal(2, rc)
      local doc = json_doc(out)
      local want = case[3] or { "usage", "usage", nil }
      assert.are.same({ "error" }, (function() local k = {} for n in pairs(doc) do k[#k + 1] = n end return k end)())
      assert.are.same(want, { doc.error.kind, doc.error.code, doc.error.field })
      assert.matches(case[2], doc.error.message)
      assert.are.equal(1, #lines(err), "the stderr line stays")
      assert.matches(case[2], err)
      assert.are.equal(0, #emulator.requests(emu))
    end)
  end

  it("--json anywhere, also after the faulty word, gives the JSON error", function()
    for _, args in ipairs{ { "robot", "clear-plugins", "--bogus", "x", "--json" },
                           { "robot", "clear-plugins", "--json=yes", "--robot-code", "x" },
                           { "robot", "wipe", "--json" },
                           { "robot", "clear-plugins", "--json", "--robot-code" } } do
      local rc, out = run(args, env)
      assert.are.equal(2, rc, table.concat(args, " "))
      local doc = json_doc(out)
      assert.are.equal("usage", doc.error.kind)
      assert.is_string(doc.error.message)
    end
    local rc, out = run({ "robot", "clear-plugins", "--robot-code", "x", "--json" }, { DINGTALK_ENDPOINT = emu.url })
    assert.are.equal(2, rc)
    assert.matches("^no access token", json_doc(out).error.message)
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("--help --json is a JSON document too", function()
    for _, args in ipairs{ { "--help", "--json" }, { "robot", "clear-plugins", "--json", "-h" } } do
      local rc, out, err = run(args, {})
      assert.are.equal(0, rc)
      assert.are.equal("", err)
      assert.matches("^Usage: dingtalk robot", json_doc(out).help)
    end
  end)

  it("invalid UTF-8 in codes read with --from still gives valid JSON and valid text", function()
    local f = assert(io.open(tmp .. ".codes", "wb"))
    -- stray bytes, an overlong '/', a surrogate half, then a server answer with raw bad bytes
    f:write("dingbot-ok\ndingbot-\255\254x\ndingbot-\192\175\ndingbot-\237\160\128\nfault-invalid-utf8\n")
    f:close()
    local rc, out, err = run({ "robot", "clear-plugins", "--from", tmp .. ".codes", "--json" }, env)
    local docs = json_lines(out)
    local R = "\239\191\189"
    local by = {}
    for _, r in ipairs(docs) do by[r.robotCode] = r end
    assert.are.equal(5, #docs)
    local bad = { "dingbot-" .. R .. R .. "x", "dingbot-" .. R .. R, "dingbot-" .. R .. R .. R }
    assert.are.same({ true, "cleared" }, { by["dingbot-ok"].ok, by["dingbot-ok"].outcome })
    for _, code in ipairs(bad) do
      -- refused before sending, each on its own: the others still run
      assert.are.same({ false, "failed", "argument", "argument.utf8" },
                      { by[code].ok, by[code].outcome, by[code].error.kind, by[code].error.code })
    end
    local last = by["fault-invalid-utf8"]
    assert.are.same({ "api", "param.illegal", 400 }, { last.error.kind, last.error.code, last.error.status })
    assert.are.equal(2, rc)   -- the worst outcome: the bad codes (usage)
    assert.is_true(valid_utf8(err))
    assert.are.equal(4 + 5, #lines(err))   -- one line per failure, the summary
    -- the server got the good codes as they were, and only those
    local sent = {}
    for _, r in ipairs(emulator.requests(emu)) do sent[#sent + 1] = cjson.decode(r.body).robotCode end
    table.sort(sent)
    assert.are.same({ "dingbot-ok", "fault-invalid-utf8" }, sent)
    -- the human output: valid UTF-8 as well, one line per code
    local rc2
    rc2, out, err = run({ "robot", "clear-plugins", "--from", tmp .. ".codes" }, env)
    assert.are.equal(rc, rc2)
    assert.are.equal("dingbot-ok: cleared\n", out)
    assert.is_true(valid_utf8(err), err)
    assert.are.equal(4 + 5, #lines(err))
    assert.matches("^dingtalk: dingbot%-" .. R .. R .. "x: ", lines(err)[1])
    assert.are.same({ "cleared 1", "already empty 0", "failed 4 (argument.utf8 3, param.illegal 1)",
                      "not attempted 0" }, summary(err))
  end)

  it("--insecure-http lets plain http go to a host that is not loopback", function()
    -- 127.1 is not loopback by name (the option check) but is by address
    -- (libcurl reads it as 127.0.0.1): no traffic leaves the machine.
    local port = assert(emu.url:match("^http://127%.0%.0%.1:(%d+)$"), emu.url)
    local plain = "http://127.1:" .. port
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok", "--endpoint", plain,
                               "--json" }, env)
    assert.are.equal(2, rc)
    local e = json_doc(out).error
    assert.are.same({ "argument", "argument.insecure", "endpoint" }, { e.kind, e.code, e.field })
    assert.matches("%-%-insecure%-http", e.message)
    assert.matches("%-%-insecure%-http", err)
    assert.are.equal(0, #emulator.requests(emu))
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok", "--endpoint", plain,
                         "--insecure-http", "--retries", "0" }, env)
    assert.are.equal(0, rc, err)
    assert.are.equal("dingbot-ok: cleared\n", out)
    local reqs = emulator.requests(emu)
    assert.are.equal(1, #reqs)
    assert.are.equal("/v1.0/robot/plugins/clear", reqs[1].path)
    assert.are.equal(TOKEN, reqs[1].headers["x-acs-dingtalk-access-token"])
    assert.are.same({ robotCode = "dingbot-ok" }, cjson.decode(reqs[1].body))
    rc, out = run({ "--help" }, {})
    assert.are.equal(0, rc)
    assert.matches("\n  %-%-insecure%-http ", out)
  end)

  it("a secret typed where it does not belong is not echoed", function()
    -- the token as a command word, glued to an unknown short option, as a robot code
    local cases = {
      { { "--json", TOKEN, "clear-plugins" }, env, 2 },
      { { "robot", "clear-plugins", "--robot-code", "x", "-t" .. TOKEN }, env, 2, "unknown option %-t " },
      { { "robot", "clear-plugins", "--robot-code", "x", "-t" .. TOKEN, "--json" }, env, 2, "unknown option %-t\"" },
      { { "robot", "clear-plugins", "--token", TOKEN, "--robot-code", TOKEN, "--json" },
        { DINGTALK_ENDPOINT = emu.url }, 1 },
      { { "robot", "clear-plugins", "--robot-code", SECRET },
        { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = "app-cli", DINGTALK_APP_SECRET = SECRET }, 1 },
      { { "robot", SECRET, "--json" },
        { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = "app-cli", DINGTALK_APP_SECRET = SECRET }, 2 },
    }
    for _, case in ipairs(cases) do
      local rc, out, err = run(case[1], case[2])
      assert.are.equal(case[3], rc, err)
      assert.is_nil(out:find(TOKEN, 1, true))
      assert.is_nil(err:find(TOKEN, 1, true))
      assert.is_nil(out:find(SECRET, 1, true))
      assert.is_nil(err:find(SECRET, 1, true))
      assert.matches(case[4] or "%[redacted%]", out .. err)
    end
  end)

  it("no token anywhere is a usage error", function()
    local rc, _, err = run({ "robot", "clear-plugins", "--robot-code", "x" }, { DINGTALK_ENDPOINT = emu.url })
    assert.are.equal(2, rc)
    assert.matches("no access token", err)
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("--help for the command and each subcommand", function()
    for _, args in ipairs{ { "--help" }, { "robot", "--help" }, { "robot", "clear-plugins", "--help" },
                           { "robot", "query-plugins", "-h" }, { "robot", "set-plugins", "--help" } } do
      local rc, out, err = run(args, {})
      assert.are.equal(0, rc)
      assert.are.equal("", err)
      assert.matches("^Usage: dingtalk robot", out)
    end
  end)

  it("--token works and is never echoed", function()
    local rc, out = run({ "robot", "clear-plugins", "--token", TOKEN, "--robot-code", "fault-echo-token",
                          "--robot-code", "dingbot-ok", "--json", "--verbose" }, { DINGTALK_ENDPOINT = emu.url })
    assert.are.equal(1, rc)
    assert.matches("%[redacted%]", out)
  end)

  it("runs in-process too", function()
    local cli = require "dingtalk.cli"
    local buf = { out = {}, err = {} }
    local function writer(t) return { write = function(_, ...) for _, s in ipairs{ ... } do t[#t + 1] = s end end } end
    local rc = cli.main({ "robot", "clear-plugins", "--robot-code", "dingbot-ok" }, {
      getenv = function(k) return env[k] end, stdout = writer(buf.out), stderr = writer(buf.err) })
    assert.are.equal(0, rc)
    assert.are.equal("dingbot-ok: cleared\n", table.concat(buf.out))
  end)

  it("--version: the command's, Lua's and libcurl's versions, exit 0", function()
    local rc, out, err = run({ "--version" }, {})
    assert.are.equal(0, rc)
    assert.are.equal("", err)
    local lua = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
    local curl = require("dingtalk.core").curl_version:match("^libcurl/(%S+)")
    assert.are.equal("dingtalk " .. require("dingtalk")._VERSION .. " (" .. lua .. ", libcurl " .. curl .. ")\n", out)
    rc, out = run({ "--version", "--json" }, {})
    assert.are.equal(0, rc)
    local doc = json_doc(out)
    assert.are.same({ require("dingtalk")._VERSION, lua, curl }, { doc.version, doc.lua, doc.libcurl })
  end)

  it("a mistyped option or command gets a suggestion", function()
    for _, case in ipairs{
      { { "robot", "clear-plugins", "--robotcode", "x" },
        "unknown option %-%-robotcode; did you mean %-%-robot%-code%?" },
      { { "robot", "clear-plugins", "--robot_code", "x" }, "did you mean %-%-robot%-code%?" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--concurency", "2" }, "did you mean %-%-concurrency%?" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--jsno" }, "did you mean %-%-json%?" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--endpiont", "http://127.0.0.1:1" },
        "did you mean %-%-endpoint%?" },
      { { "robot", "clear-plugin", "--robot-code", "x" },
        "unknown command robot clear%-plugin; did you mean robot clear%-plugins%?" },
      { { "robot", "clear-plugins", "--robot-code", "x", "--zzzzzz" }, "unknown option %-%-zzzzzz %(see" },
      { { "robt", "clear-plugins", "--robot-code", "x" }, "unknown command robt; did you mean robot%?" },
    } do
      local rc, out, err = run(case[1], env)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.matches("^dingtalk: " .. (case[2]:match("^unknown") and "" or "unknown .*") .. case[2], err)
    end
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("an empty --robot-code is a usage error that names the option", function()
    for _, args in ipairs{ { "robot", "clear-plugins", "--robot-code", "" },
                           { "robot", "clear-plugins", "--robot-code=", "--robot-code", "dingbot-ok" },
                           { "robot", "query-plugins", "--robot-code", "" } } do
      local rc, out, err = run(args, env)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.are.equal("dingtalk: --robot-code needs a robot code, got an empty value (see dingtalk --help)\n", err)
    end
    local rc, _, err = run({ "robot", "clear-plugins", "dingbot-ok", "" }, env)
    assert.are.equal(2, rc)
    assert.matches("^dingtalk: a robot code on the command line is empty", err)
    assert.are.equal(0, #emulator.requests(emu))
  end)

  it("set-plugins with one entry says '1 quick entry'", function()
    local bot = "dingbot-plugins-one" .. os.time()
    local f = assert(io.open(tmp .. ".json", "wb")); f:write('[{"name":"Docs","icon":"@lALPdocs"}]'); f:close()
    local rc, out, err = run({ "robot", "set-plugins", "--robot-code", bot, "--file", tmp .. ".json" }, env)
    assert.are.equal(0, rc, err)
    assert.are.equal(bot .. ": set 1 quick entry\n", out)
    rc, out = run({ "robot", "query-plugins", "--robot-code", bot }, env)
    assert.are.equal(0, rc)
    assert.are.equal(bot .. ": 1 quick entry", lines(out)[1])
  end)

  it("a call retried to the end says '(4 attempts)' once, not 'after ... after 4 attempts'", function()
    local rc, _, err = run({ "robot", "clear-plugins", "--robot-code", "fault-system-error" }, env)
    assert.are.equal(1, rc)
    assert.matches("^dingtalk: fault%-system%-error: system%.error %(HTTP 500%): System error "
                   .. "%[request [%w%-]+%] %(4 attempts%)\n$", err)
    assert.are.equal(4, seen("/v1.0/robot/plugins/clear"))
    -- a timeout's own message says "after N milliseconds": one "after" only
    rc, _, err = run({ "robot", "clear-plugins", "--robot-code", "fault-trickle", "--timeout", "300",
                       "--retries", "1" }, env)
    assert.are.equal(3, rc)
    assert.matches("^dingtalk: fault%-trickle: transport%.timeout: [^\n]* after %d+ milliseconds[^\n]* "
                   .. "%(2 attempts%)\n$", err)
    assert.are.equal(1, select(2, err:gsub("after", "")))
  end)

  it("exit codes: help and README give the same table, and the command behaves as it says", function()
    local rc, help = run({ "--help" }, {})
    assert.are.equal(0, rc)
    local function exit_table(s)
      local t = s:match("\n(Exit codes[^\n]*:\n.-)\n[^ \n]") or s:match("\n(Exit codes[^\n]*:\n.-)\n?$")
      return assert(t, "no exit code table in: " .. s)
    end
    local readme = clih.read("README.md")
    local block = assert(readme:match("\n```\ndingtalk robot clear%-plugins.-\n```"), "no usage block in README")
    assert.are.equal(exit_table(help), exit_table(block .. "\n"))
    assert.matches("\n  1    the platform refused %(the error on stderr%) or answered false", exit_table(help))
    -- answered false: exit 1, the result on stdout, nothing on stderr
    local out, err
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-false" }, env)
    assert.are.same({ 1, "dingbot-false: not cleared (the platform answered false)\n", "" }, { rc, out, err })
    -- refused: exit 1, the error on stderr, nothing on stdout
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-stopped" }, env)
    assert.are.same({ 1, "" }, { rc, out })
    assert.matches("^dingtalk: dingbot%-stopped: invalidRequest%.robotIsStop", err)
  end)

  it("no output of any run above carried the token or the secret, not even 8 bytes of one", function()
    assert.is_true(#outputs > 60)
    for _, secret in ipairs{ TOKEN, SECRET } do
      local s, piece = require("spec.helpers.reachable").leak(outputs, secret)
      assert.is_nil(s, tostring(piece) .. " in: " .. tostring(s))
    end
  end)
end)
