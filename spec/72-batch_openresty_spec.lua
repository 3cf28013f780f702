-- clear_plugins_many inside nginx: the same batch policy over the cosocket
-- batch transport (one ngx.thread light thread per request in flight),
-- with the assertions of spec/71 (spec/71-batch_cases.lua), in a content
-- handler and in a timer.
--
-- Two nginx instances: the emulator, and one that loads the module (the
-- LuaJIT build) and runs the cases; spec.helpers.openresty stops it.
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local openresty = require "spec.helpers.openresty"
local cases = require "spec.71-batch_cases"

-- POST /batch with the case's parameters as JSON: runs it in this request
-- (content phase), or with ?timer=1 in a zero-delay timer whose outcome
-- the request waits for; answers M.run's table plus where it ran.
local HANDLER = [==[
local cjson = require "cjson"
local cases = require "spec.71-batch_cases"
ngx.req.read_body()
local p = cjson.decode(ngx.req.get_body_data())
local transport = require "dingtalk.transport.ngx"
local out
if ngx.var.arg_timer then
  local done
  local ok, err = ngx.timer.at(0, function()
    local r = cases.run(p)
    r.phase, r.cosockets = ngx.get_phase(), transport.usable()
    done = r
  end)
  if not ok then error(err) end
  local t0 = ngx.now()
  while not done and ngx.now() - t0 < 60 do ngx.sleep(0.01) end
  out = done or { lost = true }
else
  out = cases.run(p)
  out.phase, out.cosockets = ngx.get_phase(), transport.usable()
end
ngx.header["Content-Type"] = "application/json"
ngx.say(cjson.encode(out))
]==]



-- nginx in a prefix the helper's stop() knows (it removes it), on a free port.
local function start()
  return openresty.start_conf{
    http = "client_body_buffer_size 64k;",
    locations = "location = /batch { content_by_lua_file ${PREFIX}/batch.lua; }",
    files = { ["batch.lua"] = HANDLER },
  }end

local function call(nginx, params, timer)
  local body = cjson.encode(params)
  local chunks = {}
  local _, status = http.request{
    url = "http://127.0.0.1:" .. nginx.port .. "/batch" .. (timer and "?timer=1" or ""),
    method = "POST", source = ltn12.source.string(body), sink = ltn12.sink.table(chunks),
    headers = { ["Content-Type"] = "application/json", ["Content-Length"] = #body },
  }
  local raw = table.concat(chunks)
  assert(status == 200, tostring(status) .. " " .. raw .. "\n" .. openresty.error_log(nginx))
  local out = cjson.decode(raw)
  assert(out.cosockets == true, "ran without cosockets: " .. raw)
  return out
end

local function stats(emu)
  local body, status = http.request(emu.url .. "/__emulator/stats")
  if status ~= 200 or not body then return nil end
  local ok, t = pcall(cjson.decode, body)
  return ok and t or nil
end


for _, where in ipairs{ "content", "timer" } do
  describe("clear_plugins_many inside nginx (cosockets, " .. where .. ") #nginx", function()
    local emu, nginx

    setup(function() emu, nginx = openresty.start_with_emulator(start) end)

    teardown(function()
      if nginx then openresty.stop(nginx) end
      if emu then emulator.stop(emu) end
    end)

    before_each(function() emulator.reset(emu) end)

    it("runs in the " .. where .. " phase, over cosockets", function()
      local out = call(nginx, { codes = { "dingbot-false" }, token = "tok-batch-spec-0123456789abcdef",
                                endpoint = emu.url }, where == "timer")
      assert.are.equal(where == "timer" and "timer" or "content", out.phase)
      assert.is_false(out.results[1].result)
    end)

    cases.define{
      label = where == "timer" and "t" or "n", busted = { it = it, assert = assert }, emulator = emulator,
      emu = function() return emu end,
      run = function(p) return call(nginx, p, where == "timer") end,
      stats = function() return stats(emu) end,
    }
  end)
end
