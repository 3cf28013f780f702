-- Soak: N calls (default 100,000) mixing successes with every error kind
-- against the emulator; resident memory after them must be within 1 MiB of
-- that after the first 1,000.
--
--   LUA_PATH="./lua/?.lua;;" LUA_CPATH="./build/lua5.4/?.so;;" lua5.4 tools/soak.lua URL [N]
local dingtalk = require "dingtalk"

local url, total = arg[1], tonumber(arg[2] or 100000)
local TOKEN = "tok-soak-0123456789abcdef"

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- retries = 0: every call is one request, so the mix stays as planned and fast
local client = dingtalk.new{ endpoint = url, timeout = 2000, retries = 0 }
local fast_timeout = dingtalk.new{ endpoint = url, timeout = 50, retries = 0 }
local refused = dingtalk.new{ endpoint = "http://127.0.0.1:1", retries = 0 }

-- robotCode (or a special client) per slot; the rare slow ones keep the run short.
local mix = {
  "dingbot-ok", "dingbot-false", "dingbot-ok", "dingbot-stopped", "dingbot-nobody", "fault-system-error",
  "fault-qps-api", "fault-no-permission", "fault-html-502", "fault-429", "fault-not-json", "fault-empty",
  "fault-no-result", "fault-capitalised", "fault-close-mid-body", "fault-invalid-utf8", "fault-echo-token",
  "dingbot-ok", "refused", "argument",
}
local seen, t0, rss_1000 = {}, os.clock(), nil
for i = 1, total do
  local what = mix[(i - 1) % #mix + 1]
  if i % 1000 == 0 then what = "timeout" elseif i % 2500 == 0 then what = "fault-huge" end
  local ok, res
  if what == "timeout" then
    ok, res = pcall(fast_timeout.robot.clear_plugins, { robotCode = "fault-slow-200", token = TOKEN })
  elseif what == "refused" then
    ok, res = pcall(refused.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN })
  elseif what == "argument" then
    ok, res = pcall(client.robot.clear_plugins, { robotCode = "dingbot-ok", token = TOKEN .. "\n" })
  else
    ok, res = pcall(client.robot.clear_plugins, { robotCode = what, token = TOKEN })
  end
  local key = ok and "ok" or (type(res) == "table" and res.kind or "RAW ERROR " .. tostring(res))
  seen[key] = (seen[key] or 0) + 1
  if i == 1000 then
    collectgarbage("collect")
    rss_1000 = rss_kib()
  end
end
collectgarbage("collect")
local rss_end = rss_kib()
local kinds = {}
for k, n in pairs(seen) do kinds[#kinds + 1] = k .. "=" .. n end
table.sort(kinds)
print(("soak: %d calls in %.1f s CPU; %s"):format(total, os.clock() - t0, table.concat(kinds, " ")))
print(("soak: RSS after 1,000 calls %d KiB, after %d calls %d KiB, growth %d KiB (limit 1024)")
  :format(rss_1000 or -1, total, rss_end, rss_end - (rss_1000 or 0)))
for _, k in ipairs{ "ok", "api", "http", "protocol", "transport", "argument" } do
  assert(seen[k], "no " .. k .. " outcome in the mix")
end
for k in pairs(seen) do assert(not k:find("^RAW"), k) end
assert(rss_end - rss_1000 <= 1024, "resident memory grew by more than 1 MiB")
