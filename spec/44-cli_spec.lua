-- The dingtalk command, run as a process (bin/dingtalk under the same
-- interpreter as the suite) against the emulator: output, exit codes,
-- requests counted on the server, and no secret in any output.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"

local TOKEN = "tok-cli-spec-Hq8-0123456789abcdef"
local SECRET = "sec-cli-spec-Zr4-app-secret-abcdef"

local shell = require "spec.helpers.shell"

local LUA, q = shell.LUA, shell.q

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local tmp = os.tmpname()
local outputs = {}   -- every stdout and stderr, searched for secrets at the end

-- run(args, env [, stdin]) -> exit code, stdout, stderr
local function run(args, env, stdin)
  local parts = { shell.lua_env("./lua/?.lua;./lua/?/init.lua;" .. package.path, package.cpath,
                                { "DINGTALK_ACCESS_TOKEN", "DINGTALK_APP_KEY", "DINGTALK_APP_SECRET",
                                  "DINGTALK_ENDPOINT" }) }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = LUA .. " bin/dingtalk"
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local cmd = table.concat(parts, " ")
  if stdin then
    local f = assert(io.open(tmp .. ".in", "wb")); f:write(stdin); f:close()
    cmd = cmd .. " <" .. q(tmp .. ".in")
  else
    cmd = cmd .. " </dev/null"
  end
  os.execute(cmd .. " >" .. q(tmp .. ".out") .. " 2>" .. q(tmp .. ".err") .. "; echo $? >" .. q(tmp .. ".rc"))
  local out, err = read(tmp .. ".out"), read(tmp .. ".err")
  outputs[#outputs + 1] = out
  outputs[#outputs + 1] = err
  return tonumber(read(tmp .. ".rc")), out, err
end

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
    for _, ext in ipairs{ ".out", ".err", ".rc", ".in", ".json", ".codes" } do os.remove(tmp .. ext) end
    os.remove(tmp)
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
    assert.are.same({ "dingbot-ok: cleared", "dingbot-plugins-a: cleared" }, lines(out))
    assert.are.equal("", err)
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
    assert.are.same({ "dingbot-ok: cleared", "dingbot-plugins-b: cleared" }, lines(out))
    local e = lines(err)
    assert.are.equal(1, #e, "one line per error")
    assert.matches("^dingtalk: dingbot%-stopped: invalidRequest%.robotIsStop %(HTTP 400%): .+ %[request [%w%-]+%]$",
                   e[1])
    assert.are.equal(3, seen("/v1.0/robot/plugins/clear"))
  end)

  it("--from - reads stdin; --json gives one document for scripts", function()
    local rc, out = run({ "robot", "clear-plugins", "--from", "-", "--json" }, env, "dingbot-ok\nfault-qps-api\n")
    assert.are.equal(1, rc)
    local doc = cjson.decode(out)
    assert.are.equal("robot clear-plugins", doc.command)
    assert.are.equal(2, #doc.results)
    assert.are.same({ robotCode = "dingbot-ok", ok = true, result = true }, doc.results[1])
    local r2 = doc.results[2]
    assert.are.equal(false, r2.ok)
    assert.are.same({ "api", "Forbidden.AccessDenied.QpsLimitForApi", 403, true, 4 },
                    { r2.error.kind, r2.error.code, r2.error.status, r2.error.retryable, r2.error.attempts })
    assert.are.equal(1 + 4, seen("/v1.0/robot/plugins/clear"))   -- the rate limit was retried
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
    { { "robot", "clear-plugins", "--robot-code", "x", "--endpoint", "ftp://x" }, "endpoint" },
    { { "robot", "clear-plugins", "--robot-code", "x", "--from", "/nonexistent/codes" }, "cannot read" },
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
  end

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

  it("no output of any run above carried the token or the secret", function()
    assert.is_true(#outputs > 20)
    for _, s in ipairs(outputs) do
      assert.is_nil(s:find(TOKEN, 1, true), "token in: " .. s)
      assert.is_nil(s:find(SECRET, 1, true), "secret in: " .. s)
    end
  end)
end)
