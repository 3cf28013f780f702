-- robot.query_plugins, robot.set_plugins and client:call against the
-- emulator: what was sent, what came back, what is refused before sending.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local TOKEN = "tok-plugins-spec-0123456789abcdef"
local unpack = table.unpack or unpack  -- luacheck: ignore 143

local ENTRIES = {
  { name = "Docs", icon = "@lALPdocs", pcUrl = "https://example.com/docs", mobileUrl = "https://example.com/m/docs" },
  { name = "只要名字和图标", icon = "@lALPmin" },
}

describe("query_plugins, set_plugins, call", function()
  local emu, c

  setup(function()
    emu = emulator.start()
    c = dingtalk.new{ endpoint = emu.url, sleep = function() end }
  end)
  teardown(function()
    if c then c:close() end
    if emu then emulator.stop(emu) end
  end)
  before_each(function() emulator.reset(emu) end)

  local function only_request(path)
    local reqs = emulator.requests(emu)
    assert.are.equal(1, #reqs)
    assert.are.equal(path, reqs[1].path)
    assert.are.equal(TOKEN, reqs[1].headers["x-acs-dingtalk-access-token"])
    assert.are.equal("application/json", reqs[1].headers["content-type"])
    return reqs[1], cjson.decode(reqs[1].body)
  end

  it("query_plugins returns the list as an array of tables", function()
    local list = c.robot.query_plugins{ robotCode = "dingbot-ok", token = TOKEN }
    local _, body = only_request("/v1.0/robot/plugins/query")
    assert.are.same({ robotCode = "dingbot-ok" }, body)
    assert.are.equal(2, #list)
    assert.are.same({ name = "Help", icon = "@lALPDfJ6help", pcUrl = "https://example.com/help",
                      mobileUrl = "https://example.com/m/help" }, list[1])
    assert.are.equal("Orders", list[2].name)
  end)

  it("query_plugins drops JSON nulls and maps errors like clear", function()
    local list = c.robot:query_plugins{ robotCode = "dingbot-plugin-nulls", token = TOKEN }
    assert.are.same({ { name = "N", icon = "i" } }, list)
    local ok, err = pcall(c.robot.query_plugins, { robotCode = "dingbot-stopped", token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "api", "invalidRequest.robotIsStop", 400 }, { err.kind, err.code, err.status })
    ok, err = pcall(c.robot.query_plugins, { robotCode = "fault-no-result", token = TOKEN })
    assert.is_false(ok)
    assert.are.equal("protocol.no_result", err.code)
  end)

  it("set_plugins sends the checked entries; query shows them; clear empties them", function()
    local bot = "dingbot-plugins-" .. os.time()
    assert.is_true(c.robot.set_plugins{ robotCode = bot, token = TOKEN, pluginInfoList = ENTRIES })
    local _, body = only_request("/v1.0/robot/plugins/set")
    assert.are.same({ robotCode = bot, pluginInfoList = ENTRIES }, body)
    assert.are.same(ENTRIES, c.robot.query_plugins{ robotCode = bot, token = TOKEN })
    assert.is_true(c.robot.clear_plugins{ robotCode = bot, token = TOKEN })
    assert.are.same({}, c.robot.query_plugins{ robotCode = bot, token = TOKEN })
  end)

  it("set_plugins retries like clear", function()
    assert.is_true(c.robot.set_plugins{ robotCode = "flaky-500-1-set" .. os.time(), token = TOKEN,
                                         pluginInfoList = ENTRIES })
    assert.are.equal(2, #emulator.requests(emu))
  end)

  local bad = {
    { "no list", nil, "argument.missing", "pluginInfoList" },
    { "a string", "x", "argument.type", "pluginInfoList" },
    { "empty", {}, "argument.empty", "pluginInfoList" },
    { "not an array", { a = 1 }, "argument.type", "pluginInfoList" },
    { "a hole", { [1] = ENTRIES[1], [3] = ENTRIES[2] }, "argument.type", "pluginInfoList" },
    { "an entry not a table", { "Docs" }, "argument.type", "pluginInfoList[1]" },
    { "no name", { { icon = "i" } }, "argument.missing", "pluginInfoList[1].name" },
    { "no icon", { ENTRIES[1], { name = "n" } }, "argument.missing", "pluginInfoList[2].icon" },
    { "numeric name", { { name = 1, icon = "i" } }, "argument.type", "pluginInfoList[1].name" },
    { "empty icon", { { name = "n", icon = "" } }, "argument.empty", "pluginInfoList[1].icon" },
    { "bad pcUrl", { { name = "n", icon = "i", pcUrl = true } }, "argument.type", "pluginInfoList[1].pcUrl" },
    { "CR in mobileUrl", { { name = "n", icon = "i", mobileUrl = "a\rb" } }, "argument.control_char",
      "pluginInfoList[1].mobileUrl" },
    { "unknown key", { { name = "n", icon = "i", url = "u" } }, "argument.unknown_key", "url" },
  }
  for _, case in ipairs(bad) do
    it("set_plugins refuses " .. case[1] .. " before sending", function()
      local ok, err = pcall(c.robot.set_plugins, { robotCode = "dingbot-ok", token = TOKEN,
                                                   pluginInfoList = case[2] })
      assert.is_false(ok)
      assert.are.same({ "argument", case[3], case[4] }, { err.kind, err.code, err.field })
      assert.are.equal(0, #emulator.requests(emu))
    end)
  end

  it("set_plugins refuses too many entries", function()
    local many = {}
    for i = 1, 101 do many[i] = { name = "n" .. i, icon = "i" } end
    local ok, err = pcall(c.robot.set_plugins, { robotCode = "dingbot-ok", token = TOKEN, pluginInfoList = many })
    assert.is_false(ok)
    assert.are.equal("argument.too_long", err.code)
  end)

  it("call reaches any operation and returns the decoded body", function()
    local res = c:call("POST", "/v1.0/robot/plugins/query", { robotCode = "dingbot-ok" }, { token = TOKEN })
    assert.are.equal(2, #res.pluginInfoList)
    local _, body = only_request("/v1.0/robot/plugins/query")
    assert.are.same({ robotCode = "dingbot-ok" }, body)
    emulator.reset(emu)
    res = c:call("POST", "/v1.0/robot/plugins/clear", '{"robotCode":"dingbot-ok"}', { token = TOKEN })
    assert.are.same({ result = true }, res)
  end)

  it("call maps errors and retries like the named operations", function()
    local ok, err = pcall(c.call, c, "POST", "/v1.0/robot/unknown", {}, { token = TOKEN })
    assert.is_false(ok)
    assert.are.same({ "api", "NotFound", 404 }, { err.kind, err.code, err.status })
    emulator.reset(emu)
    assert.are.same({ result = true },
      c:call("POST", "/v1.0/robot/plugins/clear", { robotCode = "flaky-502-2-call" .. os.time() }, { token = TOKEN }))
    assert.are.equal(3, #emulator.requests(emu))
    emulator.reset(emu)
    ok, err = pcall(c.call, c, "POST", "/v1.0/robot/plugins/clear", { robotCode = "fault-system-error" },
                    { token = TOKEN, retries = 0 })
    assert.is_false(ok)
    assert.are.equal(1, err.attempts)
    assert.are.equal(1, #emulator.requests(emu))
  end)

  it("call refuses bad arguments before sending", function()
    local cases = {
      { { "HEAD", "/v1.0/robot/plugins/query", {}, { token = TOKEN } }, "argument.method" },
      { { "GET", "/v1.0/robot/plugins/query", {}, { token = TOKEN } }, "argument.body" },
      { { "POST", "https://evil.example/v1.0/x", {}, { token = TOKEN } }, "argument.path" },
      { { "POST", "/v1.0/x?y=1", {}, { token = TOKEN } }, "argument.path" },
      { { "POST", "/v1.0/../x", {}, { token = TOKEN } }, "argument.path" },
      { { "POST", "/v1.0/x", 42, { token = TOKEN } }, "argument.type" },
      { { "POST", "/v1.0/x", { f = function() end }, { token = TOKEN } }, "argument.body" },
      { { "POST", "/v1.0/x", {} }, "argument.missing" },
      { { "POST", "/v1.0/x", {}, { token = TOKEN, retry = 1 } }, "argument.unknown_key" },
      { { "POST", "/v1.0/x", {}, { token = TOKEN, retries = -1 } }, "argument.option" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(c.call, c, unpack(case[1]))
      assert.is_false(ok)
      assert.are.equal(case[2], err.code)
    end
    assert.are.equal(0, #emulator.requests(emu))
  end)
end)
