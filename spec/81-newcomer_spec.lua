-- A newcomer's first hour (issue 14): what the README and emulator/README.md
-- say is what happens. The emulator's documented answers, a script of
-- one's own run by tools/with-emulator from another directory, every Lua
-- snippet of README.md as written, the hint when the C core cannot be
-- loaded, the examples' usage errors and `make test`'s report.
local emulator = require "spec.helpers.emulator"
local shell = require "spec.helpers.shell"
local clih = require "spec.helpers.cli"
local cjson = require "cjson"
local dingtalk = require "dingtalk"

local q, LUA = shell.q, shell.LUA
local read, write = clih.read, clih.write

local ROOT = (select(2, shell.sh("pwd")):gsub("%s+$", ""))
local PATHS = shell.lua_env(ROOT .. "/lua/?.lua;" .. package.path, ROOT .. "/build/" .. LUA .. "/?.so;;",
                            { "DINGTALK_ACCESS_TOKEN", "DINGTALK_APP_KEY", "DINGTALK_APP_SECRET",
                              "DINGTALK_ENDPOINT", "DINGTALK_CAFILE" })

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The rows of the n-th (default first) markdown table under `heading`, up
-- to the next heading: each an array of trimmed cells, header and
-- separator left out.
local function table_rows(text, heading, n)
  local at = assert(text:find("\n" .. heading .. "\n", 1, true), "no " .. heading)
  local body = text:sub(at + #heading + 2)
  body = body:match("^(.-)\n#") or body
  local tables, rows, header = {}, nil, true
  for line in body:gmatch("[^\n]*") do
    if line:match("^|") then
      if not rows then rows, header = {}, true; tables[#tables + 1] = rows end
      local cells = {}
      for cell in line:sub(2):gmatch("([^|]*)|") do cells[#cells + 1] = cell:match("^%s*(.-)%s*$") end
      if header then
        header = false
      elseif not cells[1]:match("^%-+$") then
        rows[#rows + 1] = cells
      end
    elseif line ~= "" then
      rows = nil   -- the table ended
    end
  end
  local t = tables[n or 1]
  assert(t and #t > 0, "no table " .. (n or 1) .. " under " .. heading)
  return t
end

local function first_code(cell) return assert(cell:match("`([^`]+)`"), "no `value` in: " .. cell) end


describe("emulator/README.md", function()
  local emu
  local doc = read("emulator/README.md")
  local tag = tostring(os.time()) .. tostring(math.random(1e6))

  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)

  -- What a call gives: "true", "false" or the error's code, and the error.
  local function outcome(c, args)
    local ok, res = pcall(c.robot.clear_plugins, args)
    if ok then return tostring(res) end
    assert.is_true(dingtalk.is_error(res), tostring(res))
    return tostring(res.code), res
  end

  local function client(opts)
    opts = opts or {}
    opts.endpoint, opts.retries, opts.timeout = emu.url, 0, 1500
    return dingtalk.new(opts)
  end

  -- the KIND table, for the flaky-KIND-N-TAG rows
  local kinds = {}
  for _, row in ipairs(table_rows(doc, "## Robot codes", 2)) do
    kinds[#kinds + 1] = { first_code(row[1]), first_code(row[3]) }
  end

  it("lists every robot code the emulator knows, and each answers as the table says", function()
    local rows = table_rows(doc, "## Robot codes")
    local listed = {}
    local n = 0
    for _, row in ipairs(rows) do
      local code, answer, gives = first_code(row[1]), row[2], row[3]
      listed[code] = true
      if code == "flaky-KIND-N-TAG" then
        assert.is_true(#kinds >= 9)
        for _, k in ipairs(kinds) do
          local c = client()
          local bot = "flaky-" .. k[1] .. "-1-" .. tag
          assert.are.equal(k[2], (outcome(c, { robotCode = bot, token = "emulator-token" })), bot)
          assert.are.equal("true", (outcome(c, { robotCode = bot, token = "emulator-token" })), bot)
          c:close()
          n = n + 1
        end
      elseif not code:match("^%w+$") or code == "nobody" then
        local bot = code:gsub("ANY", "x" .. tag):gsub("%-MS$", "-10"):gsub("%-N$", "-10")
        local c = client()
        local got, err = outcome(c, { robotCode = bot, token = "emulator-token" })
        c:close()
        assert.are.equal(first_code(gives), got, bot)
        if err then
          assert.are.equal(gives:find("(retryable)", 1, true) ~= nil, err.retryable == true, bot .. " retryable")
          local status = tonumber(answer:match("^(%d%d%d)"))
          if err.kind ~= "transport" then assert.are.equal(status, err.status, bot .. " status") end
          assert.is_nil(tostring(err):find("emulator-token", 1, true))
        end
        n = n + 1
      end
    end
    assert.is_true(n >= 50, "rows checked: " .. n)
    -- and no code of the emulator is left out of the table
    for code in read("emulator/dingtalk_emulator.lua"):gmatch('\nfaults%["([^"]+)"%]') do
      assert.is_true(listed[code] == true, code .. " is not in emulator/README.md")
    end
  end)

  it("answers by token as the access tokens table says", function()
    for _, row in ipairs(table_rows(doc, "## Access tokens")) do
      local token = first_code(row[1]):gsub("ANY", tag)
      local c = client()
      assert.are.equal(first_code(row[2]), (outcome(c, { robotCode = "dingbot-ok", token = token })), token)
      c:close()
    end
  end)

  it("answers by app key as the app keys table says", function()
    local rows = table_rows(doc, "## App keys")
    assert.is_true(#rows >= 12)
    for _, row in ipairs(rows) do
      local key, gives = first_code(row[1]), first_code(row[3])
      local keys = { key }
      if key == "flaky-KIND-N-TAG" then
        keys = {}
        for _, k in ipairs(kinds) do
          if k[1] ~= "slow" and k[1] ~= "drop" then keys[#keys + 1] = { "flaky-" .. k[1] .. "-1-a" .. tag, k[2] } end
        end
      end
      for _, k in ipairs(keys) do
        local app, want = k, gives
        if type(k) == "table" then app, want = k[1], k[2] end
        app = app:gsub("ANY", tag):gsub("%-N$", "-60")
        local c = client{ app_key = app, app_secret = "emulator-secret-" .. tag }
        assert.are.equal(want, (outcome(c, { robotCode = "dingbot-ok" })), app)
        if type(k) == "table" then assert.are.equal("true", (outcome(c, { robotCode = "dingbot-ok" })), app) end
        c:close()
      end
    end
  end)

  it("lists control endpoints that answer", function()
    local http = require "socket.http"
    for _, row in ipairs(table_rows(doc, "## Control endpoints")) do
      local method, path = first_code(row[1]):match("^(%u+) (%S+)$")
      if method == "GET" then
        local body, status = http.request(emu.url .. path)
        assert.are.equal(200, status, path)
        assert.is_string(body)
      end
    end
    emulator.reset(emu)
    assert.are.same({ delay_ms = 0, rate_limit = 0 }, emulator.config(emu, {}))
  end)
end)


describe("tools/with-emulator", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir .. "/sub")))
  end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("runs a relative script from the caller's directory, with the emulator's variables", function()
    write(dir .. "/sub/mine.lua", [[
local dingtalk = require "dingtalk"
local client = dingtalk.new{ endpoint = os.getenv("DINGTALK_ENDPOINT") }
print(client.robot.clear_plugins{ robotCode = "dingbot-ok", token = os.getenv("DINGTALK_ACCESS_TOKEN") })
local p = io.popen("pwd"); print(p:read("*l")); p:close()
local f = assert(io.open(os.getenv("DINGTALK_CAFILE"))); f:close()
print(os.getenv("DINGTALK_EMULATOR_TLS"))
os.exit(5)
]])
    local rc, out = shell.sh("cd " .. q(dir) .. " && " .. PATHS .. " " .. q(ROOT .. "/tools/with-emulator")
                             .. " " .. LUA .. " sub/mine.lua")
    assert.are.equal(5, rc, out)   -- the command's own exit status
    local l = lines(out)
    assert.are.equal("true", l[1], out)
    assert.are.equal(dir, l[2])
    assert.matches("^https://127%.0%.0%.1:%d+$", l[3])
    -- and the emulator is gone afterwards
    local port = l[3]:match(":(%d+)$")
    local sock = require("socket").tcp()
    sock:settimeout(1)
    assert.is_nil((sock:connect("127.0.0.1", tonumber(port))))
    sock:close()
  end)
end)


describe("README.md's Lua snippets run as written", function()
  local emu, dir
  local readme = read("README.md")

  -- Every ```lua block, and the reason it is not run if a marker says so.
  local blocks = {}
  for before, code in readme:gmatch("([^\n]*)\n```lua\n(.-)\n```") do
    blocks[#blocks + 1] = { code = code, skip = before:match("^<!%-%- snippet: not run (.-) %-%->$") }
  end

  -- Before each snippet: every client (the README's endpoints are the real
  -- platform's) goes to the emulator, and a global read or written that
  -- was never defined fails the run.
  local PRELUDE = [[
local dingtalk = require "dingtalk"
local new = dingtalk.new
local function here(o)
  o = o or {}
  local t = {}
  for k, v in pairs(o) do t[k] = v end
  t.endpoint = os.getenv("SPEC_EMULATOR")
  return t
end
dingtalk.new = function(o) return new(here(o)) end
dingtalk.configure(here())
setmetatable(_G, {
  __index = function(_, k) error("undefined global " .. tostring(k), 2) end,
  __newindex = function(_, k) error("assignment to undefined global " .. tostring(k), 2) end,
})
]]

  setup(function()
    emu = emulator.start()
    dir = os.tmpname()
  end)
  teardown(function()
    for _, ext in ipairs{ "", ".lua" } do os.remove(dir .. ext) end
    if emu then emulator.stop(emu) end
  end)

  it("finds the snippets, and every one not run says why", function()
    assert.is_true(#blocks >= 4)
    local skipped = 0
    for _, b in ipairs(blocks) do
      if b.skip then
        skipped = skipped + 1
        assert.matches("%(.+%)", b.skip)
      end
    end
    assert.are.equal(1, skipped)
  end)

  for i, b in ipairs(blocks) do
    if not b.skip then
      it("snippet " .. i .. " (" .. (b.code:match("[^\n]*\n([^\n]*)") or ""):sub(1, 50) .. ")", function()
        emulator.reset(emu)
        write(dir .. ".lua", PRELUDE .. "\n" .. b.code .. "\n")
        local rc, out = shell.sh(PATHS .. " DINGTALK_ACCESS_TOKEN=tok-readme-spec SPEC_EMULATOR=" .. q(emu.url)
                                 .. " " .. LUA .. " " .. q(dir .. ".lua"))
        assert.are.equal(0, rc, out)
        assert.is_nil(out:find("undefined global", 1, true), out)
        assert.is_nil(out:find("error object is not a string", 1, true), out)
        -- it talked to the emulator, with the token the README says
        local reqs = emulator.requests(emu)
        assert.is_true(#reqs >= 1, out)
        for _, r in ipairs(reqs) do
          assert.are.equal("/v1.0/robot/plugins/clear", r.path)
          assert.is_string(cjson.decode(r.body).robotCode)
        end
      end)
    end
  end
end)


describe("a C core that cannot be loaded", function()
  local function require_with(lua, cpath)
    return shell.sh(shell.lua_env(ROOT .. "/lua/?.lua;;", cpath) .. " " .. lua .. " -e 'require \"dingtalk\"'")
  end

  it("built for another Lua: says so, how to build it, for which interpreter, where Lua looked", function()
    if os.execute("command -v lua5.3 >/dev/null") ~= true and os.execute("command -v lua5.3 >/dev/null") ~= 0 then
      pending("no lua5.3")
      return
    end
    local rc, out = require_with("lua5.3", ROOT .. "/build/lua5.4/?.so")
    assert.are.equal(1, rc)
    assert.matches("cannot be loaded into Lua 5%.3 %(the core found was built for another Lua version%)", out)
    assert.matches("make build LUA=lua5%.3", out)
    assert.matches("luarocks %-%-lua%-version=5%.3 make", out)
    assert.matches("package%.cpath: " .. (ROOT .. "/build/lua5.4/?.so"):gsub("%p", "%%%0"), out)
    assert.matches("undefined symbol: lua_", out)   -- the loader's own words
  end)

  it("not built at all: the same hint, and the loader's list of files tried", function()
    local rc, out = require_with(LUA, "/nonexistent-dingtalk/?.so")
    assert.are.equal(1, rc)
    local version = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
    assert.matches("cannot be loaded into " .. version:gsub("%p", "%%%0") .. "%.", out)
    assert.matches("make build LUA=" .. LUA:gsub("%p", "%%%0"), out)
    assert.matches("package%.cpath: /nonexistent%-dingtalk/%?%.so", out)
    assert.matches("module 'dingtalk%.core' not found", out)
    assert.matches("no file '/nonexistent%-dingtalk/dingtalk/core%.so'", out)
  end)

  it("the command says the same", function()
    -- cjson from Debian's directory only: no installed dingtalk core in reach
    local v = rawget(_G, "jit") and "5.1" or _VERSION:match("%d+%.%d+")
    local cpath = "/nonexistent-dingtalk/?.so;/usr/lib/x86_64-linux-gnu/lua/" .. v .. "/?.so"
    local rc, out = shell.sh(shell.lua_env(ROOT .. "/lua/?.lua;;", cpath) .. " " .. LUA
                             .. " bin/dingtalk --version")
    assert.are.equal(4, rc, out)   -- the help's "cannot be loaded"
    assert.matches("^dingtalk: the C core %(dingtalk%.core%) cannot be loaded", out)
    assert.matches("make build LUA=" .. LUA:gsub("%p", "%%%0"), out)
    assert.is_nil(out:find("stack traceback", 1, true), out)
  end)
end)


describe("examples/clear_plugins.lua", function()
  it("an option the library refuses is one line and exit 2, also on Lua 5.1", function()
    local rc, out = shell.sh(PATHS .. " DINGTALK_ACCESS_TOKEN=t DINGTALK_ENDPOINT=http://example.com " .. LUA
                             .. " examples/clear_plugins.lua dingbot-ok")
    assert.are.equal(2, rc, out)
    assert.matches("^dingtalk: argument%.insecure: plain http is allowed only to a loopback address[^\n]*\n$", out)
  end)
end)


describe("examples/ops_bulk_clear.lua", function()
  it("a usage error exits 2 with the usage line and no traceback", function()
    local codes = os.tmpname()
    write(codes, "dingbot-ok\n")
    for _, env in ipairs{ "DINGTALK_ACCESS_TOKEN=t DINGTALK_ENDPOINT=http://example.com",
                          "DINGTALK_ACCESS_TOKEN=t DINGTALK_ENDPOINT=http://127.0.0.1:1 DINGTALK_CONCURRENCY=0",
                          "DINGTALK_ACCESS_TOKEN=t DINGTALK_CAFILE=/nonexistent/ca.crt",
                          "DINGTALK_ACCESS_TOKEN=" } do
      local rc, out = shell.sh(PATHS .. " " .. env .. " " .. LUA .. " examples/ops_bulk_clear.lua " .. q(codes))
      assert.are.equal(2, rc, env .. ": " .. out)
      local l = lines(out)
      assert.are.equal(2, #l, out)
      assert.matches("^ops_bulk_clear: ", l[1])
      assert.matches("^usage: DINGTALK_ACCESS_TOKEN=", l[2])
      assert.is_nil(out:find("traceback", 1, true))
    end
    os.remove(codes)
  end)
end)


describe("make test's report (tools/test)", function()
  it("one line per interpreter with its time, busted's words only for failures, the total last", function()
    -- a tools/test that ignored TEST_SPECS would run the whole suite, this
    -- spec included, again and again
    assert.matches("TEST_SPECS", read("tools/test"))
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. q(dir))
    write(dir .. "/t_spec.lua", [[
describe("s", function()
  it("passes", function() assert.is_true(true) end)
  it("fails on purpose", function() assert.are.equal("wanted", "got") end)
  pending("later")
end)
]])
    local rc, out = shell.sh("TEST_SPECS=" .. q(dir) .. " tools/test " .. LUA)
    os.execute("rm -rf " .. q(dir))
    assert.are.equal(1, rc, out)
    local l = lines(out)
    assert.matches("^" .. LUA:gsub("%p", "%%%0") .. ": 1 passed, 1 failed, 1 skipped %(%d+ s%)$", l[1])
    assert.matches("Failure %-> .*t_spec%.lua @ 3", out)
    assert.matches("wanted", out)
    assert.is_nil(out:find("Pending", 1, true))
    assert.is_nil(("\n" .. out):find("\n[+%-.]+\n"), "no progress dots")
    assert.are.equal("1 passed, 1 failed", l[#l])
  end)
end)
