-- client:call with every method the Open API uses: the server sees the
-- method, a GET carries no body, and the client goes back to POST after.
local cjson = require "cjson"
local emulator = require "spec.helpers.emulator"
local dingtalk = require "dingtalk"

local TOKEN = "tok-methods-0123456789"

describe("client:call methods", function()
  local emu, c
  setup(function()
    emu = emulator.start()
    c = dingtalk.new{ endpoint = emu.url, retries = 0 }
  end)
  teardown(function()
    if c then c:close() end
    if emu then emulator.stop(emu) end
  end)
  before_each(function() emulator.reset(emu) end)

  it("sends GET, PUT, DELETE and PATCH as asked, then POST again", function()
    for _, m in ipairs{ "GET", "PUT", "DELETE", "PATCH" } do
      local body = m ~= "GET" and { x = m } or nil
      local ok, err = pcall(c.call, c, m, "/v1.0/contact/users/me", body, { token = TOKEN })
      -- the emulator does not know this operation: a platform-style 404
      assert.is_false(ok)
      assert.are.same({ "api", 404 }, { err.kind, err.status })
    end
    assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
    local reqs = emulator.requests(emu)
    assert.are.equal(5, #reqs)
    assert.are.same({ "GET", "PUT", "DELETE", "PATCH", "POST" },
                    { reqs[1].method, reqs[2].method, reqs[3].method, reqs[4].method, reqs[5].method })
    assert.are.equal("", reqs[1].body)
    assert.is_nil(reqs[1].headers["content-length"])
    assert.are.same({ x = "PUT" }, cjson.decode(reqs[2].body))
    assert.are.same({ x = "PATCH" }, cjson.decode(reqs[4].body))
    assert.are.same({ robotCode = "dingbot-ok" }, cjson.decode(reqs[5].body))
    for _, r in ipairs(reqs) do assert.are.equal(TOKEN, r.headers["x-acs-dingtalk-access-token"]) end
  end)

  it("refuses other methods and a body on GET before sending", function()
    for _, args in ipairs{ { "HEAD", nil }, { "get", nil }, { "GET", { a = 1 } } } do
      local ok, err = pcall(c.call, c, args[1], "/v1.0/contact/users/me", args[2], { token = TOKEN })
      assert.is_false(ok)
      assert.are.equal("argument", err.kind)
    end
    assert.are.equal(0, #emulator.requests(emu))
  end)
end)
