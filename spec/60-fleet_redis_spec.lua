-- A fleet sharing one access token through Redis (issue 12): real
-- redis-server (spec.helpers.redis: a free loopback port, no persistence),
-- redis-lua (Debian's lua-redis), the emulator counting the token requests,
-- and member processes that each make their own client.
local cjson = require "cjson"
local socket = require "socket"
local core = require "dingtalk.core"
local dingtalk = require "dingtalk"
local emulator = require "spec.helpers.emulator"
local redis = require "spec.helpers.redis"
local shell = require "spec.helpers.shell"

local SECRET = "sec-Fleet-7c1d-app-secret-never-stored"
local TOKEN_PATH = "/v1.0/oauth2/accessToken"
local CLEAR_PATH = "/v1.0/robot/plugins/clear"

local keys = 0
local function key(prefix)
  keys = keys + 1
  return (prefix or "fleet-k") .. keys .. "x" .. os.time()
end

-- every 8-byte window of the secret (the redactor's rule: no fragment of it)
local function holds_secret(s)
  for i = 1, #SECRET - 7 do
    if s:find(SECRET:sub(i, i + 7), 1, true) then return true end
  end
  return false
end

describe("a fleet sharing its token through Redis", function()
  local emu, rh

  setup(function()
    emu = emulator.start()
    rh = redis.start()
  end)
  teardown(function()
    if rh then redis.stop(rh) end
    if emu then emulator.stop(emu) end
  end)
  before_each(function()
    emulator.reset(emu)
    emulator.configure(emu, { delay_ms = 0 })
    if not rh.pid then rh = redis.start() end
    local r = redis.client(rh)
    r:flushall()
    r:quit()
  end)

  local function requests(path, app_key)
    local out = {}
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == path and (not app_key or path ~= TOKEN_PATH or cjson.decode(r.body).appKey == app_key) then
        out[#out + 1] = r
      end
    end
    return out
  end

  local function tokens_used()
    local seen, list = {}, {}
    for _, r in ipairs(requests(CLEAR_PATH)) do
      local t = r.headers["x-acs-dingtalk-access-token"]
      if not seen[t] then seen[t] = true; list[#list + 1] = t end
    end
    return list
  end

  local function env(app_key, calls)
    return { FLEET_ENDPOINT = emu.url, FLEET_APP_KEY = app_key, FLEET_SECRET = SECRET,
             FLEET_REDIS_PORT = tostring(rh.port), FLEET_CALLS = tostring(calls or 1) }
  end

  -- an in-process member: its own client over its own Redis connections
  local function member(app_key, extra)
    local events = {}
    local r = redis.require_redis()
    local opts = {
      endpoint = emu.url, app_key = app_key, app_secret = SECRET, timeout = 3000,
      token_cache = dingtalk.token_cache.redis(function()
        return r.connect{ host = "127.0.0.1", port = rh.port, timeout = 0.3 }
      end),
      on_request = function(ev) events[#events + 1] = ev end,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return dingtalk.new(opts), events
  end

  local function entry(app_key)
    local k = dingtalk.token_cache.key(emu.url, app_key, SECRET)
    local r = redis.client(rh)
    local v, ttl = r:get(k), r:ttl(k)
    r:quit()
    return v and cjson.decode(v), ttl, k
  end

  it("processes in turn: one token fetch in all, the others take it from Redis", function()
    local k = key()
    for _ = 1, 3 do
      local out = redis.fleet(1, env(k, 2))
      assert.are.same({ ok = 2, failed = 0, errors = {}, cache_errors = {} }, out[1])
    end
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    assert.are.equal(6, #requests(CLEAR_PATH))
    assert.are.same({ "at-" .. k .. "-1" }, tokens_used())
    local e = entry(k)
    assert.are.equal("at-" .. k .. "-1", e.token)
  end)

  it("processes at once: one fetches, the others wait for its token", function()
    local k = key()
    -- every answer takes 300 ms: the fetch is surely in flight while the
    -- other members look
    emulator.configure(emu, { delay_ms = 300 })
    local t0 = socket.gettime()
    local out = redis.fleet(8, env(k, 2))
    local took = socket.gettime() - t0
    for i = 1, 8 do
      assert.are.same({ ok = 2, failed = 0, errors = {}, cache_errors = {} }, out[i], "member " .. i)
    end
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    assert.are.equal(16, #requests(CLEAR_PATH))
    assert.are.same({ "at-" .. k .. "-1" }, tokens_used())
    assert.is_true(took < 20, "the fleet took " .. took .. " s")
    -- the lock was given back
    local r = redis.client(rh)
    assert.is_nil(r:get(select(3, entry(k)) .. ":lock"))
    r:quit()
  end)

  it("the entry lives in Redis until the refresh time: expireIn minus the margin", function()
    -- app-expire-N: the emulator answers expireIn N; margin min(600, N/5)
    for _, case in ipairs{ { n = 1000, life = 800 }, { n = 100, life = 80 } } do
      local app = "app-expire-" .. case.n
      local before = os.time()
      local c = member(app)
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
      c:close()
      local e, ttl = entry(app)
      assert.is_true(ttl <= case.life and ttl >= case.life - 5, app .. ": ttl " .. ttl)
      assert.are.equal(case.n - case.life, e.expires_at - e.refresh_at)
      assert.is_true(e.expires_at >= before + case.n and e.expires_at <= os.time() + case.n)
      assert.matches("^at%-" .. app:gsub("%-", "%%-") .. "%-%d+$", e.token)
    end
  end)

  it("at the refresh time the entry is gone from Redis, and the fleet refreshes once", function()
    -- expireIn 3: margin 0.6 s, 2 s in Redis
    local app = "app-expire-3"
    emulator.configure(emu, { delay_ms = 200 })
    local out = redis.fleet(4, env(app, 1))
    for i = 1, 4 do assert.are.equal(1, out[i].ok, "member " .. i) end
    assert.are.equal(1, #requests(TOKEN_PATH, app))
    local e, ttl = entry(app)
    assert.is_true(ttl >= 1 and ttl <= 2, "ttl " .. ttl)
    local first = e.token
    local deadline = socket.gettime() + 5
    while entry(app) and socket.gettime() < deadline do socket.sleep(0.1) end
    assert.is_nil(entry(app))
    out = redis.fleet(4, env(app, 1))
    for i = 1, 4 do assert.are.equal(1, out[i].ok, "member " .. i) end
    assert.are.equal(2, #requests(TOKEN_PATH, app))
    local second = entry(app).token
    assert.are_not.equal(first, second)
    local used = tokens_used()
    assert.are.same({ first, second }, used)
  end)

  it("no key or value in Redis holds the secret; the key is the hash of endpoint, key and secret", function()
    local k = key()
    redis.fleet(3, env(k, 1))
    local c = member(k, { endpoint = emu.url .. "/" })   -- normalised: the same entry
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    c:close()
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    local all, n = redis.dump(rh), 0
    for name, kv in pairs(all) do
      n = n + 1
      assert.is_false(holds_secret(name), name)
      assert.is_false(holds_secret(kv.value), name)
      assert.is_nil(name:find(k, 1, true))   -- not even the app key in clear
    end
    assert.are.equal(1, n)   -- the token entry; the lock is gone
    -- the key: sha256 of endpoint \0 app_key \0 secret, by the system's sha256sum
    local rc, sum = shell.sh("printf '%s\\0%s\\0%s' " .. shell.q(emu.url) .. " " .. shell.q(k) .. " "
      .. shell.q(SECRET) .. " | sha256sum")
    assert.are.equal(0, rc)
    local name = next(all)
    assert.are.equal("dingtalk:token:" .. sum:match("^(%x+)"), name)
    assert.are.equal(name, dingtalk.token_cache.key(emu.url, k, SECRET))
    -- another secret for the same app key: another entry, another fetch
    local c2 = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET .. "-rotated",
      token_cache = dingtalk.token_cache.redis(redis.client(rh)) }
    assert.is_true(c2.robot.clear_plugins{ robotCode = "dingbot-ok" })
    c2:close()
    assert.are.equal(2, #requests(TOKEN_PATH, k))
  end)

  it("a revoked token: the fleet refreshes once (two fetches in all)", function()
    -- app-revoke-first: the first token issued is refused by every API
    local app = "app-revoke-first"
    emulator.configure(emu, { delay_ms = 200 })
    local out = redis.fleet(6, env(app, 2))
    for i = 1, 6 do
      assert.are.same({ ok = 2, failed = 0, errors = {}, cache_errors = {} }, out[i], "member " .. i)
    end
    local fetches = requests(TOKEN_PATH, app)
    assert.are.equal(2, #fetches)
    local e = entry(app)
    assert.are.equal("at-app-revoke-first-2", e.token)
    -- every call with the refused token was repeated once with the new one
    local ok = 0
    for _, r in ipairs(requests(CLEAR_PATH)) do
      if r.headers["x-acs-dingtalk-access-token"] == "at-app-revoke-first-2" then ok = ok + 1 end
    end
    assert.are.equal(12, ok)
  end)

  it("a refused token is removed only while Redis still holds that same token", function()
    local k = key()
    local _, _, name = entry(k)
    local function plant(t)
      local r = redis.client(rh)
      local now = os.time()
      r:setex(name, 600, cjson.encode{ token = t, expires_at = now + 3600, refresh_at = now + 600 })
      r:quit()
    end
    -- 1. the refused token is still the entry: removed, and one fetch
    plant("invalid-planted-1")
    local c, events = member(k)
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    assert.are.equal("at-" .. k .. "-1", entry(k).token)
    assert.are.same({ "invalid-planted-1", "at-" .. k .. "-1" }, tokens_used())
    for _, ev in ipairs(events) do assert.is_nil(ev.cache_error) end
    c:close()
    -- 2. another process replaced it meanwhile: taken, not removed, no fetch
    emulator.reset(emu)
    plant("invalid-planted-2")
    local swapped = false
    c = member(k, { on_request = function(ev)
      if ev.path == CLEAR_PATH and not ev.ok and not swapped then
        swapped = true
        plant("good-planted-token-3")
      end
    end })
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.is_true(swapped)
    assert.are.equal(0, #requests(TOKEN_PATH, k))
    assert.are.same({ "invalid-planted-2", "good-planted-token-3" }, tokens_used())
    assert.are.equal("good-planted-token-3", entry(k).token)
    c:close()
  end)

  it("Redis stopped mid-run: calls still succeed, and the event reports the cache failure", function()
    local k = key()
    local c1 = member(k)
    assert.is_true(c1.robot.clear_plugins{ robotCode = "dingbot-ok" })
    redis.stop(rh, true)
    -- a process starting now finds no cache: it fetches itself
    local c2, events = member(k)
    assert.is_true(c2.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.is_true(c2.robot.clear_plugins{ robotCode = "dingbot-ok" })
    -- the one that had the token goes on with it
    assert.is_true(c1.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(2, #requests(TOKEN_PATH, k))
    -- the token fetch's event carries the failed read; the call's event
    -- the failed write
    local fetch_ev, call_ev = events[1], events[2]
    assert.are.equal(TOKEN_PATH, fetch_ev.path)
    assert.is_true(fetch_ev.ok)
    assert.are.equal("get", fetch_ev.cache_error.op)
    assert.matches("refused", fetch_ev.cache_error.message)
    assert.are.equal(CLEAR_PATH, call_ev.path)
    assert.are.equal("set", call_ev.cache_error.op)
    assert.is_nil(events[3].cache_error)
    for _, ev in ipairs(events) do
      if ev.cache_error then
        assert.is_false(holds_secret(ev.cache_error.message))
        assert.is_nil(ev.cache_error.message:find("at-" .. k, 1, true))
      end
    end
    c1:close()
    c2:close()
    rh = redis.start()
    -- back: the next process stores its token again
    local c3 = member(k)
    assert.is_true(c3.robot.clear_plugins{ robotCode = "dingbot-ok" })
    c3:close()
    assert.are.equal("at-" .. k .. "-3", entry(k).token)
  end)

  it("a client object whose connection broke (no reconnect function) is not fatal either", function()
    local k = key()
    local conn = redis.client(rh)
    local events = {}
    local c = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET,
      token_cache = dingtalk.token_cache.redis(conn),
      on_request = function(ev) events[#events + 1] = ev end }
    redis.stop(rh, true)
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    assert.are.equal("get", events[1].cache_error.op)
    c:close()
    rh = redis.start()
  end)

  it("a Redis that hangs: its timeout is a cache failure, and the call succeeds", function()
    local k = key()
    os.execute("kill -STOP " .. math.floor(rh.pid))
    local ok, err = pcall(function()
      local c, events = member(k)   -- redis-lua timeout 0.3 s
      local t0 = socket.gettime()
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
      local took = socket.gettime() - t0
      c:close()
      assert.is_true(took < 5, "took " .. took .. " s")
      assert.are.equal("get", events[1].cache_error.op)
      assert.matches("timeout", events[1].cache_error.message)
    end)
    os.execute("kill -CONT " .. math.floor(rh.pid))
    assert(ok, err)
    assert.are.equal(1, #requests(TOKEN_PATH, k))
  end)

  it("a lock left by a dead process: the others wait no longer than their call's limit", function()
    local k = key()
    local _, _, name = entry(k)
    local r = redis.client(rh)
    r:set(name .. ":lock", "someone-who-died", "EX", 60)
    r:quit()
    -- limit: start + timeout + retry_deadline = 0.5 + 1 s
    local c = member(k, { timeout = 500, retry_deadline = 1000 })
    local t0 = socket.gettime()
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    local took = socket.gettime() - t0
    c:close()
    assert.is_true(took >= 0.4 and took < 4, "took " .. took .. " s")
    assert.are.equal(1, #requests(TOKEN_PATH, k))
    -- its token is stored all the same; the foreign lock is left alone
    assert.are.equal("at-" .. k .. "-1", entry(k).token)
    r = redis.client(rh)
    assert.are.equal("someone-who-died", r:get(name .. ":lock"))
    r:quit()
  end)

  it("while another process refreshes, a token still valid here serves at once", function()
    local app = "app-expire-1000"   -- here: refresh after 800 s, expiry after 1000 s
    local clock = { t = 5000 }
    local c = member(app, { now = function() return clock.t end,
                            sleep = function(sec) clock.t = clock.t + sec end })
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    local first = entry(app).token
    -- another process is refreshing: the entry is gone, the lock is taken
    local _, _, name = entry(app)
    local r = redis.client(rh)
    r:del(name)
    r:set(name .. ":lock", "another-process", "EX", 30)
    r:quit()
    clock.t = clock.t + 850          -- due here, still valid
    emulator.reset(emu)
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(5850, clock.t)   -- no wait
    assert.are.equal(0, #requests(TOKEN_PATH, app))
    assert.are.same({ first }, tokens_used())
    -- past expiry it waits for the other process's token (up to its limit)
    r = redis.client(rh)
    r:setex(name, 600, cjson.encode{ token = "from-the-other-process", expires_at = os.time() + 3600,
                                     refresh_at = os.time() + 600 })
    r:quit()
    clock.t = clock.t + 200
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(0, #requests(TOKEN_PATH, app))
    assert.are.same({ first, "from-the-other-process" }, tokens_used())
    c:close()
  end)

  it("token_cache is checked when the client is made", function()
    local function refused(opts, pattern)
      local ok, e = pcall(dingtalk.new, opts)
      assert.is_false(ok)
      assert.are.equal("argument.option", e.code)
      assert.are.equal("token_cache", e.field)
      assert.matches(pattern, e.message)
    end
    refused({ endpoint = emu.url, token_cache = dingtalk.token_cache.redis(redis.client(rh)) }, "app credentials")
    refused({ endpoint = emu.url, app_key = "k", app_secret = SECRET, token_cache = {} }, "get and set")
    refused({ endpoint = emu.url, app_key = "k", app_secret = SECRET,
              token_cache = { get = print, set = print, lock = print } }, "lock and unlock")
    assert.is_string(core.sha256(""))
  end)
end)
