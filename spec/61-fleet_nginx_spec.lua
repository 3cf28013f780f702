-- All workers of one nginx share one access token through a
-- lua_shared_dict (issue 12): examples/openresty/nginx.conf as it stands,
-- with app credentials, run with 4 workers against the emulator; 40
-- concurrent requests make one token fetch in all.
--
-- The nginx is started here (worker_processes 4 instead of the example's
-- "auto", and a free port), in the example's layout, and stopped by PID.
local cjson = require "cjson"
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local openresty = require "spec.helpers.openresty"

local TOKEN_PATH = "/v1.0/oauth2/accessToken"
local CLEAR_PATH = "/v1.0/robot/plugins/clear"
local SECRET = "sec-nginx-fleet-5e2a-secret"

local read_file = require("spec.helpers.shell").read

local capture = require("spec.helpers.shell").capture

-- the example in its layout, 4 workers, on a free port; env for nginx
local function start(emu, env)
  return openresty.start_example{ cafile = emu.cafile, workers = 4, env = env }
end

describe("nginx with 4 workers and a shared dict #nginx", function()
  local emu, ngx_

  setup(function()
    emu = emulator.start()
  end)
  teardown(function()
    if ngx_ then openresty.stop(ngx_) end
    if emu then emulator.stop(emu) end
  end)

  local function requests(path)
    local out = {}
    for _, r in ipairs(emulator.requests(emu)) do
      if r.path == path then out[#out + 1] = r end
    end
    return out
  end

  it("40 concurrent requests: one token fetch in all, one token used by every worker", function()
    local app_key = "nginx-fleet-" .. os.time()
    ngx_ = start(emu, { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = app_key, DINGTALK_APP_SECRET = SECRET })
    local workers
    local deadline = socket.gettime() + 5
    repeat
      workers = 0
      for _ in capture("pgrep -P " .. math.floor(ngx_.pid)):gmatch("%d+") do workers = workers + 1 end
      if workers < 4 then socket.sleep(0.05) end
    until workers >= 4 or socket.gettime() > deadline
    assert.are.equal(4, workers)
    emulator.reset(emu)
    -- each answer takes 300 ms: the fetch is in flight while the other
    -- requests, in every worker, need the token
    emulator.configure(emu, { delay_ms = 300 })
    local conns = {}
    for i = 1, 40 do conns[i] = openresty.send(ngx_, "/bots/dingbot-ok/clear-plugins", nil, nil, "POST") end
    for i = 1, 40 do
      local status, body = openresty.receive(conns[i])
      assert.are.equal(200, status, "request " .. i .. ": " .. cjson.encode(body))
      assert.are.same({ cleared = true }, body)
    end
    emulator.configure(emu, { delay_ms = 0 })
    local fetches = requests(TOKEN_PATH)
    assert.are.equal(1, #fetches)
    assert.are.same({ appKey = app_key, appSecret = SECRET }, cjson.decode(fetches[1].body))
    local calls = requests(CLEAR_PATH)
    assert.are.equal(40, #calls)
    for _, r in ipairs(calls) do
      assert.are.equal("at-" .. app_key .. "-1", r.headers["x-acs-dingtalk-access-token"])
    end
    -- the secret is in no log line
    local log = openresty.error_log(ngx_) .. (read_file(ngx_.prefix .. "/logs/access.log") or "")
    assert.is_nil(log:find(SECRET, 1, true))
    assert.is_nil(log:find("at-" .. app_key, 1, true))
  end)

  it("a token the platform revokes: the workers refresh once (two fetches in all)", function()
    if ngx_ then openresty.stop(ngx_) end
    -- app-revoke-first: the first token issued is refused by every API
    ngx_ = start(emu, { DINGTALK_ENDPOINT = emu.url, DINGTALK_APP_KEY = "app-revoke-first",
                        DINGTALK_APP_SECRET = SECRET })
    socket.sleep(0.3)   -- the 4 workers up
    emulator.reset(emu)
    emulator.configure(emu, { delay_ms = 200 })
    local conns = {}
    for i = 1, 40 do conns[i] = openresty.send(ngx_, "/bots/dingbot-ok/clear-plugins", nil, nil, "POST") end
    for i = 1, 40 do
      local status, body = openresty.receive(conns[i])
      assert.are.equal(200, status, "request " .. i .. ": " .. cjson.encode(body))
      assert.are.same({ cleared = true }, body)
    end
    emulator.configure(emu, { delay_ms = 0 })
    assert.are.equal(2, #requests(TOKEN_PATH))
    local with = {}
    for _, r in ipairs(requests(CLEAR_PATH)) do
      local t = r.headers["x-acs-dingtalk-access-token"]
      with[t] = (with[t] or 0) + 1
    end
    assert.are.equal(40, with["at-app-revoke-first-2"])
    for t in pairs(with) do assert.matches("app%-revoke%-first%-[12]$", t) end
  end)
end)
