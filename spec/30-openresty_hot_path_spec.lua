-- Inside nginx: the cosocket transport's per-call path stays JIT-friendly
-- (issue 13), and what it keeps between calls (the last request's bytes
-- per client) never sends a stale request.
--
-- One nginx (spec.helpers.openresty.start_conf, worker_processes 1, the
-- LuaJIT build) both makes the calls and answers them: cosockets to the
-- same nginx do not block it. Its worker logs LuaJIT's trace events
-- (jit.v, to nginx's error log) from init_worker on.
local cjson = require "cjson"
local openresty = require "spec.helpers.openresty"

local TOKEN = "hot-path-token-0123456789abcdef0"
local OTHER = "hot-path-token-other-0123456789a"

-- In nginx: /loop?n= makes n clear_plugins calls in a loop, one client;
-- /seq makes the calls of the request-reuse case below, one at a time, and
-- answers each outcome; /log gives (and empties) what /rec received.
local HANDLER = [==[
local dingtalk = require "dingtalk"
local cjson = require "cjson"

local _M = {}
local function endpoint(base) return "http://127.0.0.1:" .. ngx.var.server_port .. "/" .. base end

local fast, rec, rec_ua

function _M.loop()
  fast = fast or dingtalk.new{ endpoint = endpoint("fast") }
  local n, yes = tonumber(ngx.var.arg_n), 0
  for _ = 1, n do
    if fast.robot.clear_plugins{ robotCode = "dingbot-ok", token = "]==] .. TOKEN .. [==[" } then
      yes = yes + 1
    end
  end
  ngx.print(yes)
end

function _M.seq()
  rec = rec or dingtalk.new{ endpoint = endpoint("rec") }
  rec_ua = rec_ua or dingtalk.new{ endpoint = endpoint("rec"), user_agent = "other-agent/1" }
  local calls = cjson.decode(ngx.req.get_uri_args().calls)
  local out = {}
  for i, c in ipairs(calls) do
    local ok, v = pcall((c.ua and rec_ua or rec).robot.clear_plugins, { robotCode = c.code, token = c.token })
    out[i] = ok and { ok = true, result = v } or { ok = false, code = type(v) == "table" and v.code or tostring(v) }
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(out))
end

function _M.rec()
  ngx.req.read_body()
  local h = ngx.req.get_headers()
  ngx.shared.rec:rpush("log", cjson.encode{ token = h["x-acs-dingtalk-access-token"],
                                            ua = h["user-agent"], body = ngx.req.get_body_data() })
  ngx.header["Content-Type"] = "application/json"
  ngx.print('{"result":true}')
end

function _M.log()
  local out = {}
  while true do
    local v = ngx.shared.rec:lpop("log")
    if not v then break end
    out[#out + 1] = cjson.decode(v)
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.print(#out == 0 and "[]" or cjson.encode(out))
end

return _M
]==]


local function start()
  return openresty.start_conf{
    http = [[
    lua_shared_dict rec 1m;
    init_worker_by_lua_block {
        require("jit.v").start()   -- to stderr, which nginx points at its error log
        package.loaded.hot_path_spec = dofile("${PREFIX}/hot.lua")
    }
    ]],
    locations = [[
        location = /fast/v1.0/robot/plugins/clear {
            default_type application/json;
            return 200 '{"result":true}';
        }
        location = /rec/v1.0/robot/plugins/clear { content_by_lua_block { require("hot_path_spec").rec() } }
        location = /loop { content_by_lua_block { require("hot_path_spec").loop() } }
        location = /seq  { content_by_lua_block { require("hot_path_spec").seq() } }
        location = /log  { content_by_lua_block { require("hot_path_spec").log() } }
    ]],
    files = { ["hot.lua"] = HANDLER },
  }
end


describe("OpenResty: the per-call path #nginx", function()
  local nginx

  setup(function()
    assert(io.open("build/luajit/dingtalk/core.so"),
           "build/luajit/dingtalk/core.so is missing: nginx loads the LuaJIT build")
    nginx = start()
  end)

  teardown(function()
    if nginx then openresty.stop(nginx) end
  end)

  -- LuaJIT compiles string.find only for a plain search, and string.match,
  -- gmatch and gsub never: a trace that meets one ends there ("stitch
  -- string.match") or is given up, and the rest of the call runs in the
  -- interpreter. The cosocket methods are C functions: stitching at them
  -- is expected (a hand-written cosocket POST has as many).
  it("makes 600 calls whose traces meet no string pattern function and no NYI", function()
    local status, body = openresty.get(nginx, "/loop", { n = 600 })
    assert.are.equal(200, status, tostring(body) .. openresty.error_log(nginx))
    assert.are.equal(600, body)
    local log = openresty.error_log(nginx)
    local traces, bad = 0, {}
    for line in log:gmatch("[^\n]+") do
      local event = line:match("%[TRACE[^%]]*%]")
      if event then
        traces = traces + 1
        if event:find("stitch string.", 1, true) or event:find("NYI", 1, true)
            or event:find("fallback to interpreter", 1, true) then
          bad[#bad + 1] = event
        end
      end
    end
    -- not vacuous: the JIT ran and traced the calls' path
    assert.is_true(traces >= 10, "only " .. traces .. " trace events in the log")
    assert.matches("%[TRACE[^%]]* ngx%.lua:%d+", log)
    assert.are.same({}, bad)
  end)

  -- The transport keeps each client's last request and sends it again
  -- while path, token, body, method and User-Agent stay the same.
  it("sends what each call asks for, whatever the call before it sent", function()
    openresty.get(nginx, "/log")
    local calls = {
      { token = TOKEN, code = "dingbot-a" },
      { token = TOKEN, code = "dingbot-a" },                -- the same again
      { token = OTHER, code = "dingbot-a" },                -- another token
      { token = TOKEN, code = "dingbot-b" },                -- another body
      { token = "bad\1token", code = "dingbot-a" },         -- refused, before any byte is sent
      { token = TOKEN, code = "dingbot-b" },
      { token = TOKEN, code = "dingbot-b", ua = true },     -- another client (another User-Agent)
      { token = TOKEN, code = "dingbot-b" },
    }
    local status, out = openresty.get(nginx, "/seq", { calls = cjson.encode(calls) })
    assert.are.equal(200, status, tostring(out) .. openresty.error_log(nginx))
    local ok = { ok = true, result = true }
    assert.are.same({ ok, ok, ok, ok, { ok = false, code = "argument.control_char" }, ok, ok, ok }, out)
    local _, got = openresty.get(nginx, "/log")
    assert.are.equal(7, #got)
    local ua = got[1].ua
    assert.matches("^lua%-dingtalk/", ua)
    local want = {
      { TOKEN, ua, "dingbot-a" }, { TOKEN, ua, "dingbot-a" }, { OTHER, ua, "dingbot-a" },
      { TOKEN, ua, "dingbot-b" }, { TOKEN, ua, "dingbot-b" }, { TOKEN, "other-agent/1", "dingbot-b" },
      { TOKEN, ua, "dingbot-b" },
    }
    for i, w in ipairs(want) do
      assert.are.equal(w[1], got[i].token, "request " .. i .. ": token")
      assert.are.equal(w[2], got[i].ua, "request " .. i .. ": User-Agent")
      assert.are.same({ robotCode = w[3] }, cjson.decode(got[i].body), "request " .. i .. ": body")
    end
  end)
end)
