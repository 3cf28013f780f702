-- Inside nginx (lua-nginx-module): a light thread killed while it fetches
-- the access token of a shared client does not wedge that client (issue
-- 10, point 5). The next caller gets a token within its normal latency;
-- the emulator counts the token requests it received.
--
-- Two nginx instances: the emulator, and one running the handler below
-- (worker_processes 1, the LuaJIT build), started here because its
-- locations are this spec's own; spec.helpers.openresty serves the
-- requests to it and stops it.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local openresty = require "spec.helpers.openresty"

local TOKEN_PATH = "/v1.0/oauth2/accessToken"
local CLEAR_PATH = "/v1.0/robot/plugins/clear"

-- In nginx: /kill?endpoint=&app_key=&timeout=&pause=
-- Thread A calls clear_plugins on a fresh client whose token request is
-- slow (the emulator's flaky-slow-1-<tag> answers its first token request
-- after 1 s); after `pause` s A is killed with ngx.thread.kill; then thread
-- B makes the same call on the same client. B's outcome comes back as
-- JSON, or { wedged = true } when it did not end within 5 s.
local HANDLER = [==[
local dingtalk = require "dingtalk"
local cjson = require "cjson"
local semaphore = require "ngx.semaphore"

local args = ngx.req.get_uri_args()
local c = dingtalk.new{
  endpoint = args.endpoint, app_key = args.app_key, app_secret = "h4-spec-secret-0123456789",
  timeout = tonumber(args.timeout), random = function() return 0 end,
}
local out = {}

local function call()
  local ok, v = pcall(c.robot.clear_plugins, { robotCode = "dingbot-ok" })
  if ok then return { ok = true, result = v } end
  return { ok = false, code = type(v) == "table" and v.code or tostring(v),
           message = type(v) == "table" and v.message or nil }
end

local a = ngx.thread.spawn(function() out.a = call() end)
ngx.sleep(tonumber(args.pause))
out.killed = ngx.thread.kill(a) == 1
ngx.update_time()
local t0 = ngx.now()
local done = semaphore.new()
local b = ngx.thread.spawn(function()
  out.b = call()
  done:post(1)
end)
if not done:wait(5) then
  ngx.thread.kill(b)
  out.wedged = true
end
ngx.update_time()
out.b_ms = math.floor((ngx.now() - t0) * 1000 + 0.5)
-- and one more call (unless B is stuck: so would it be)
if not out.wedged then out.c = call() end
c:close()
ngx.header["Content-Type"] = "application/json"
ngx.say(cjson.encode(out))
]==]



-- nginx in a prefix the helper's stop() knows (it removes it), on a free port.
local function start()
  return openresty.start_conf{
    locations = "location = /kill { content_by_lua_file ${PREFIX}/kill.lua; }",
    files = { ["kill.lua"] = HANDLER },
  }end


describe("OpenResty: a killed token fetch #nginx", function()
  local emu, nginx

  setup(function() emu, nginx = openresty.start_with_emulator(start) end)

  teardown(function()
    if nginx then openresty.stop(nginx) end
    if emu then emulator.stop(emu) end
  end)

  before_each(function() emulator.reset(emu) end)

  local function count(path)
    local n = 0
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == path then n = n + 1 end
    end
    return n
  end

  local tags = 0
  local function slow_key()
    tags = tags + 1
    return "flaky-slow-1-k" .. tags .. "x" .. os.time()
  end

  it("does not wedge the shared client: the next caller gets a token at once", function()
    local key = slow_key()
    -- timeout 500 ms: the slow token request (1 s) times out and is retried
    local status, res = openresty.get(nginx, "/kill",
      { endpoint = emu.url, app_key = key, timeout = 500, pause = 0.2 })
    assert.are.equal(200, status, tostring(res) .. "\n" .. openresty.error_log(nginx))
    assert.is_table(res, tostring(res))
    assert.is_true(res.killed, cjson.encode(res))
    assert.is_nil(res.a, "A ran to its end: it was not killed mid-fetch")
    assert.is_nil(res.wedged, "B still waits for the killed fetch: " .. cjson.encode(res))
    assert.are.same({ ok = true, result = true }, res.b, cjson.encode(res))
    -- its normal latency: the timed-out request and the retry (~0.5 s), not
    -- the minute a waiter used to give the killed fetch
    assert.is_true(res.b_ms < 3000, "B took " .. tostring(res.b_ms) .. " ms")
    assert.are.same({ ok = true, result = true }, res.c)
    -- the slow token request and its retry; B's call and the last one
    assert.are.equal(2, count(TOKEN_PATH))
    assert.are.equal(2, count(CLEAR_PATH))
    local tokens = {}
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == CLEAR_PATH then tokens[#tokens + 1] = r.headers["x-acs-dingtalk-access-token"] end
    end
    assert.are.same({ "at-" .. key .. "-1", "at-" .. key .. "-1" }, tokens)
  end)

  it("the next caller waits for the killed caller's fetch and gets its outcome", function()
    local key = slow_key()
    -- timeout 3 s: the fetch started by A gets the slow answer after 1 s,
    -- which holds no token (not retried); B, waiting for that fetch, gets
    -- its error rather than a second fetch of its own
    local status, res = openresty.get(nginx, "/kill",
      { endpoint = emu.url, app_key = key, timeout = 3000, pause = 0.2 })
    assert.are.equal(200, status, tostring(res))
    assert.is_true(res.killed, cjson.encode(res))
    assert.is_nil(res.a)
    assert.is_nil(res.wedged, "B still waits for the killed fetch: " .. cjson.encode(res))
    assert.are.same({ false, "protocol.no_token" }, { res.b.ok, res.b.code }, cjson.encode(res))
    assert.is_true(res.b_ms < 3000, "B took " .. tostring(res.b_ms) .. " ms")
    -- the next call fetches again, and gets a token
    assert.are.same({ ok = true, result = true }, res.c)
    assert.are.equal(2, count(TOKEN_PATH))
    assert.are.equal(1, count(CLEAR_PATH))
  end)
end)
