-- The token cache interface for other stores (issue 12): what the token
-- manager calls on a cache a user writes (get/set, optional lock/unlock/
-- delete), and a cache that fails in every way it can (raises, nil + err)
-- is never fatal and is reported, redacted, on the next on_request event.
-- The stores here are plain Lua tables behind the documented methods, as a
-- user would write for a store of their own; the platform is the emulator.
local cjson = require "cjson"
local dingtalk = require "dingtalk"
local emulator = require "spec.helpers.emulator"

local SECRET = "sec-iface-91ab-app-secret-xyz"
local TOKEN_PATH = "/v1.0/oauth2/accessToken"

local n = 0
local function app()
  n = n + 1
  return "iface-" .. n .. "x" .. os.time()
end

-- get/set only, recording every call
local function table_store(log)
  local data = {}
  return {
    data = data,
    get = function(_, k) log[#log + 1] = { "get", k }; return data[k] end,
    set = function(_, k, v, ttl) log[#log + 1] = { "set", k, v, ttl }; data[k] = v; return true end,
  }
end

describe("the token cache interface", function()
  local emu

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function fetches(k)
    local c = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == TOKEN_PATH and cjson.decode(r.body).appKey == k then c = c + 1 end
    end
    return c
  end

  it("a store with get and set only: shared by two clients, set with the key, the entry and a whole ttl", function()
    local k = "app-expire-3000"
    local log = {}
    local store = table_store(log)
    local c1 = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET, token_cache = store }
    local c2 = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET, token_cache = store }
    assert.is_true(c1.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.is_true(c2.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.is_true(c1.robot.clear_plugins{ robotCode = "dingbot-ok" })
    assert.are.equal(1, fetches(k))
    local key = dingtalk.token_cache.key(emu.url, k, SECRET)
    -- c1: miss, set; c2: hit; c1 again: its own memory
    assert.are.equal(3, #log)
    assert.are.same({ "get", key }, log[1])
    assert.are.same({ "set", key }, { log[2][1], log[2][2] })
    assert.are.equal(2400, log[2][4])   -- 3000 - min(600, 3000/5)
    assert.are.equal("number", type(log[2][4]))
    assert.are.equal(math.floor(log[2][4]), log[2][4])
    local e = cjson.decode(log[2][3])
    assert.are.equal(600, e.expires_at - e.refresh_at)
    assert.is_nil(log[2][3]:find(SECRET, 1, true))
    assert.are.same({ "get", key }, log[3])
    c1:close()
    c2:close()
  end)

  it("lock/unlock: the holder looks again after taking the lock, and gives it back", function()
    local k = app()
    local log = {}
    local store = table_store(log)
    local locks = {}
    store.lock = function(_, name, ttl)
      log[#log + 1] = { "lock", name, ttl }
      if locks[name] then return false end
      locks[name] = true
      return true
    end
    store.unlock = function(_, name) log[#log + 1] = { "unlock", name }; locks[name] = nil end
    local c = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET, token_cache = store,
                            timeout = 2000 }
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
    local key = dingtalk.token_cache.key(emu.url, k, SECRET)
    local ops = {}
    for i, e in ipairs(log) do ops[i] = e[1] end
    assert.are.same({ "get", "lock", "get", "set", "unlock" }, ops)
    assert.are.equal(key .. ":lock", log[2][2])
    assert.are.equal(3, log[2][3])        -- ceil(one attempt (2 s) + 1 s slack)
    assert.are.equal(key .. ":lock", log[5][2])
    assert.is_nil(next(locks))
    c:close()
  end)

  it("a store that raises or answers nil, err everywhere: calls succeed, the event says so, redacted", function()
    for _, how in ipairs{ "raise", "return" } do
      local k = app()
      local function fail(op)
        -- a store whose message quotes what it holds or was given (the
        -- secret, and after the fetch the token)
        local msg = op .. " failed for secret " .. SECRET .. (op == "get" and "" or " token at-" .. k .. "-1")
        if how == "raise" then error(msg, 0) end
        return nil, msg
      end
      local store = {
        get = function() return fail("get") end,
        set = function() return fail("set") end,
        lock = function() return fail("lock") end,
        unlock = function() return fail("unlock") end,
      }
      local events = {}
      local c = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET, token_cache = store,
                              on_request = function(ev) events[#events + 1] = ev end }
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
      assert.are.equal(1, fetches(k))
      assert.are.equal(3, #events)
      assert.are.equal(TOKEN_PATH, events[1].path)
      assert.are.equal("get", events[1].cache_error.op)
      assert.are.equal("set", events[2].cache_error.op)
      assert.is_nil(events[3].cache_error)
      for i = 1, 2 do
        local m = events[i].cache_error.message
        assert.matches("^" .. events[i].cache_error.op .. " failed for secret ", m)
        assert.is_nil(m:find(SECRET, 1, true))
        assert.is_nil(m:find("at-" .. k .. "-1", 1, true))
        assert.matches("%[redacted%]", m)
      end
      c:close()
    end
  end)

  it("core.sha256 (the key's hash) gives the FIPS 180-4 digests", function()
    local sha256 = require("dingtalk.core").sha256
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sha256(""))
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", sha256("abc"))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                     sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
                     sha256(string.rep("a", 1000000)))
    -- bytes, not text: NULs and high bytes count
    assert.are_not.equal(sha256("a\0b"), sha256("a\0c"))
    assert.are.equal(64, #sha256("\255\0\128"))
    assert.has_error(function() sha256() end)
  end)

  it("an entry that is garbled, expired, or due is not taken", function()
    local k = app()
    local log = {}
    local store = table_store(log)
    local key = dingtalk.token_cache.key(emu.url, k, SECRET)
    local now = os.time()
    for _, v in ipairs{
      "not json", cjson.encode{ token = "x" },
      cjson.encode{ token = "old-token-1", expires_at = now - 10, refresh_at = now - 100 },
      cjson.encode{ token = "due-token-22", expires_at = now + 100, refresh_at = now - 1 },
      cjson.encode{ token = "bad\ntoken", expires_at = now + 3600, refresh_at = now + 600 },
    } do
      store.data[key] = v
      local c = dingtalk.new{ endpoint = emu.url, app_key = k, app_secret = SECRET, token_cache = store }
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok" })
      c:close()
    end
    assert.are.equal(5, fetches(k))
  end)
end)
