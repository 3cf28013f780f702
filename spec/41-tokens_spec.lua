-- Access tokens from app credentials: fetched, cached, refreshed ahead of
-- expiry, refreshed once when the platform refuses one, one fetch at a
-- time; the secret never in an error. Counted on the server.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local SECRET = "sec-Qw7-app-secret-must-not-leak-9f2b"
local TOKEN_PATH = "/v1.0/oauth2/accessToken"
local CLEAR_PATH = "/v1.0/robot/plugins/clear"

local keys = 0
local function key(prefix)
  keys = keys + 1
  return (prefix or "app-k") .. keys .. "x" .. os.time()
end

local function fake_clock()
  local c = { t = 5000 }
  c.sleep = function(s) c.t = c.t + s end
  c.now = function() return c.t end
  c.random = function() return 0 end
  return c
end

local strings = require("spec.helpers.reachable").strings

describe("tokens from app credentials", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function client(app_key, extra, clock)
    local opts = { endpoint = emu.url, app_key = app_key, app_secret = SECRET, timeout = 2000 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    clock = clock or fake_clock()
    opts.sleep, opts.now, opts.random = clock.sleep, clock.now, clock.random
    return dingtalk.new(opts), clock
  end

  local function requests(path)
    local out = {}
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == path then out[#out + 1] = r end
    end
    return out
  end

  it("fetches a token once and uses it for calls that omit token", function()
    local k = key()
    local c = client(k)
    for _ = 1, 3 do assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" }) end
    local fetches = requests(TOKEN_PATH)
    assert.are.equal(1, #fetches)
    assert.are.same({ appKey = k, appSecret = SECRET }, cjson.decode(fetches[1].body))
    assert.is_nil(fetches[1].headers["x-acs-dingtalk-access-token"])
    local calls = requests(CLEAR_PATH)
    assert.are.equal(3, #calls)
    for _, r in ipairs(calls) do
      assert.are.equal("at-" .. k .. "-1", r.headers["x-acs-dingtalk-access-token"])
    end
    c:close()
  end)

  it("an explicit token still wins", function()
    local c = client(key())
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = "explicit-token-123" })
    assert.are.equal(0, #requests(TOKEN_PATH))
    assert.are.equal("explicit-token-123", requests(CLEAR_PATH)[1].headers["x-acs-dingtalk-access-token"])
    c:close()
  end)

  it("refreshes ahead of expiry: 10 minutes before a 2-hour token", function()
    local k = key()
    local c, clock = client(k)
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    clock.t = clock.t + 7200 - 601
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(1, #requests(TOKEN_PATH))
    clock.t = clock.t + 2
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #requests(TOKEN_PATH))
    local calls = requests(CLEAR_PATH)
    assert.are.equal("at-" .. k .. "-2", calls[3].headers["x-acs-dingtalk-access-token"])
    c:close()
  end)

  it("a short lifetime refreshes at a fraction of it (expireIn 100: after 80 s)", function()
    local c, clock = client("app-expire-100")
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    clock.t = clock.t + 79
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(1, #requests(TOKEN_PATH))
    clock.t = clock.t + 2
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #requests(TOKEN_PATH))
    c:close()
  end)

  for _, k in ipairs{ "app-expire-0", "app-expire-none" } do
    it("never loops on a zero or missing expireIn (" .. k .. ")", function()
      local c = client(k)
      for _ = 1, 5 do assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" }) end
      assert.are.equal(1, #requests(TOKEN_PATH))
      assert.are.equal(5, #requests(CLEAR_PATH))
      c:close()
    end)
  end

  it("a refused cached token is refreshed once and the call repeated once", function()
    local c = client("app-revoke-first")
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #requests(TOKEN_PATH))
    local calls = requests(CLEAR_PATH)
    assert.are.equal(2, #calls)
    assert.matches("^invalid%-", calls[1].headers["x-acs-dingtalk-access-token"])
    assert.matches("^at%-app%-revoke%-first%-2$", calls[2].headers["x-acs-dingtalk-access-token"])
    c:close()
  end)

  it("only once: a token refused again fails the call", function()
    local c = client("app-always-invalid")
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.are.equal("InvalidAuthentication", err.code)
    assert.are.equal(2, err.attempts)
    assert.are.equal(2, #requests(TOKEN_PATH))
    assert.are.equal(2, #requests(CLEAR_PATH))
    c:close()
  end)

  it("an explicit token that is refused is not refreshed", function()
    local c = client(key())
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok", token = "expired-token" })
    assert.is_false(ok)
    assert.are.equal("InvalidAuthentication", err.code)
    assert.are.equal(0, #requests(TOKEN_PATH))
    assert.are.equal(1, #requests(CLEAR_PATH))
    c:close()
  end)

  it("bad credentials: the platform's error table, not retried, no call made", function()
    local c = client("bad-app")
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.is_true(dingtalk.is_error(err))
    assert.are.same({ "api", "invalidClientIdOrSecret", 400, false, 1 },
                    { err.kind, err.code, err.status, err.retryable, err.attempts })
    assert.matches("^[%w%-]+$", err.request_id)
    assert.are.equal(1, #requests(TOKEN_PATH))
    assert.are.equal(0, #requests(CLEAR_PATH))
    c:close()
  end)

  it("a server error of the token call is retried", function()
    local c = client(key("flaky-500-1-"))
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #requests(TOKEN_PATH))
    assert.are.equal(1, #requests(CLEAR_PATH))
    c:close()
  end)

  it("an answer without accessToken is a protocol error", function()
    local c = client("app-no-token")
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.are.same({ "protocol", "protocol.no_token" }, { err.kind, err.code })
    assert.are.equal(0, #requests(CLEAR_PATH))
    c:close()
  end)

  it("the secret never appears in an error, tostring, the client or a hook event", function()
    local events = {}
    local c = client("app-echo-secret", { on_request = function(ev) events[#events + 1] = ev end })
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.are.equal("invalidClientIdOrSecret", err.code)
    assert.matches("%[redacted%]", err.message)
    local all = strings(err)
    all[#all + 1] = tostring(err)
    for _, s in ipairs(strings(events)) do all[#all + 1] = s end
    for _, s in ipairs(strings(c)) do all[#all + 1] = s end
    for _, s in ipairs(strings(c.options)) do all[#all + 1] = s end
    for _, s in ipairs(all) do
      assert.is_nil(s:find(SECRET, 1, true), "leaked in: " .. s)
    end
    assert.are.equal(TOKEN_PATH, events[1].path)
    c:close()
  end)

  it("neither the token nor the secret is in a hook event of a good call", function()
    local events = {}
    local k = key()
    local c = client(k, { on_request = function(ev) events[#events + 1] = ev end })
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #events)
    assert.are.same({ TOKEN_PATH, CLEAR_PATH }, { events[1].path, events[2].path })
    for _, s in ipairs(strings(events)) do
      assert.is_nil(s:find(SECRET, 1, true))
      assert.is_nil(s:find("at-" .. k, 1, true))
    end
    c:close()
  end)

  it("makes one fetch at a time: a second caller waits for the first", function()
    -- the waiting happens in coroutines (nginx); PUC Lua 5.1 cannot yield across pcall
    if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then return pending("needs a yieldable pcall") end
    local k = key()
    local clock = fake_clock()
    -- sleep yields, as ngx.sleep does inside nginx
    clock.sleep = function(s) clock.t = clock.t + s; coroutine.yield("waiting") end
    local c = client(k, nil, clock)
    local post = c.post
    c.post = function(self, path, ...)
      if path == TOKEN_PATH then coroutine.yield("fetching") end
      return post(self, path, ...)
    end
    local a = coroutine.create(function() return c.robot.clear_plugins{ robotCode = "dingbot-ok" } end)
    local b = coroutine.create(function() return c.robot.clear_plugins{ robotCode = "dingbot-ok" } end)
    assert.are.same({ true, "fetching" }, { coroutine.resume(a) })
    assert.are.same({ true, "waiting" }, { coroutine.resume(b) })
    assert.are.same({ true, true }, { coroutine.resume(a) })
    assert.are.same({ true, true }, { coroutine.resume(b) })
    assert.are.equal(1, #requests(TOKEN_PATH))
    assert.are.equal(2, #requests(CLEAR_PATH))
    c:close()
  end)

  it("checks the credentials before any traffic, without echoing them", function()
    for _, o in ipairs{ { app_key = "k" }, { app_secret = SECRET }, { app_key = "k", app_secret = "" },
                        { app_key = 1, app_secret = SECRET }, { app_key = "k", app_secret = SECRET .. "\n" } } do
      local ok, err = pcall(dingtalk.new, o)
      assert.is_false(ok)
      assert.are.equal("argument", err.kind)
      assert.is_nil(tostring(err):find(SECRET, 1, true))
    end
    -- without credentials the token stays required
    local c = dingtalk.new{ endpoint = emu.url }
    local ok, err = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
    assert.is_false(ok)
    assert.are.same({ "argument.missing", "token" }, { err.code, err.field })
    c:close()
    assert.are.equal(0, #emulator.requests(emu))
  end)
end)
