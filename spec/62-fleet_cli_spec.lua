-- The command shares the fleet's token through Redis (issue 12):
-- --token-cache redis://HOST:PORT[/DB] and DINGTALK_TOKEN_CACHE, with app
-- credentials. Each run is its own process (bin/dingtalk) against the
-- emulator and a real redis-server.
local cjson = require "cjson"
local dingtalk = require "dingtalk"
local emulator = require "spec.helpers.emulator"
local redis = require "spec.helpers.redis"

local SECRET = "sec-cli-fleet-3b9e-secret-value"
local TOKEN_PATH = "/v1.0/oauth2/accessToken"

local runner = require("spec.helpers.cli").new()
local run = runner.run   -- run(args, env) -> exit code, stdout, stderr

describe("dingtalk --token-cache", function()
  local emu, rh
  local n = 0

  setup(function()
    emu = emulator.start()
    rh = redis.start()
  end)
  teardown(function()
    if rh then redis.stop(rh) end
    if emu then emulator.stop(emu) end
    runner.cleanup()
  end)
  before_each(function() emulator.reset(emu) end)

  local function app()
    n = n + 1
    return "cli-fleet-" .. n .. "x" .. os.time()
  end

  local function fetches(k)
    local c = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == TOKEN_PATH and cjson.decode(r.body).appKey == k then c = c + 1 end
    end
    return c
  end

  local function creds(k, extra)
    local e = { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = k, DINGTALK_APP_SECRET = SECRET }
    for name, v in pairs(extra or {}) do e[name] = v end
    return e
  end

  it("runs in turn share one token: --token-cache and DINGTALK_TOKEN_CACHE alike", function()
    local k = app()
    local url = "redis://127.0.0.1:" .. rh.port
    for i = 1, 4 do
      local args = { "robot", "clear-plugins", "--robot-code", "dingbot-ok" }
      local env = creds(k)
      if i % 2 == 0 then env.DINGTALK_TOKEN_CACHE = url else args[#args + 1] = "--token-cache=" .. url end
      local rc, out, err = run(args, env)
      assert.are.equal(0, rc, err)
      assert.are.equal("dingbot-ok: cleared\n", out)
      assert.are.equal("", err)
    end
    assert.are.equal(1, fetches(k))
    -- without the cache, each run fetches its own
    local rc = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok" }, creds(k))
    assert.are.equal(0, rc)
    assert.are.equal(2, fetches(k))
  end)

  it("/DB selects the Redis database", function()
    local k = app()
    local rc, _, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok",
                            "--token-cache", "redis://127.0.0.1:" .. rh.port .. "/3" }, creds(k))
    assert.are.equal(0, rc, err)
    local r = redis.client(rh)
    local name = dingtalk.token_cache.key(emu.url, k, SECRET)
    assert.is_nil(r:get(name))
    r:select(3)
    assert.are.equal("at-" .. k .. "-1", cjson.decode(r:get(name)).token)
    r:quit()
  end)

  it("a Redis nobody listens on is not fatal: the run fetches its token itself", function()
    local socket = require "socket"
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    local k = app()
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "dingbot-ok", "--json" },
                             creds(k, { DINGTALK_TOKEN_CACHE = "redis://127.0.0.1:" .. port }))
    assert.are.equal(0, rc, err)
    -- clear-plugins --json: one JSON line per code
    local line = cjson.decode(out:match("^[^\n]*"))
    assert.are.same({ "dingbot-ok", true, "cleared" }, { line.robotCode, line.ok, line.outcome })
    assert.are.equal(1, fetches(k))
  end)

  it("a malformed URL, or a cache without app credentials, is a usage error that does not echo the URL", function()
    local bad = "http://user-secret-pw@127.0.0.1:" .. rh.port
    local rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "x", "--token-cache", bad, "--json" },
                             creds(app()))
    assert.are.equal(2, rc)
    assert.matches("redis://", cjson.decode(out).error.message)
    assert.is_nil((out .. err):find("user-secret-pw", 1, true))
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "x", "--token-cache",
                        "redis://:pw-in-url@127.0.0.1:" .. rh.port }, creds(app()))
    assert.are.equal(2, rc)
    assert.matches("password", err)
    assert.are.equal("", out)
    assert.is_nil(err:find("pw-in-url", 1, true))
    rc, out, err = run({ "robot", "clear-plugins", "--robot-code", "x", "--token-cache",
                        "redis://127.0.0.1:" .. rh.port },
                       { DINGTALK_ENDPOINT = emu.url, DINGTALK_ACCESS_TOKEN = "t-123456789" })
    assert.are.equal("", out)
    assert.are.equal(2, rc)
    assert.matches("needs app credentials", err)
  end)
end)
