-- What the libcurl transport puts on the wire and takes from it: an
-- at-most-once request is never re-sent by libcurl, response heads past
-- the limits and odd framings are refused (and not retried), request ids
-- are kept whole and handed to on_request hooks redacted.
local emulator = require "spec.helpers.emulator"
local reachable = require "spec.helpers.reachable"
local dingtalk = require "dingtalk"
local core = require "dingtalk.core"
local cjson = require "cjson"

local TOKEN = "tok-wire-spec-0123456789abcdefghijklmnopqrstuvwxyz"
local CLEAR = "/v1.0/robot/plugins/clear"

describe("the libcurl transport on the wire", function()
  local emu
  setup(function() emu = emulator.start() end)
  teardown(function() if emu then emulator.stop(emu) end end)
  before_each(function() emulator.reset(emu) end)

  local function post(c, base, code, once)
    return core.post(c, base .. CLEAR, TOKEN, '{"robotCode":"' .. code .. '"}', "result", "POST", once)
  end

  local tag = 0
  local function flaky_drop()
    tag = tag + 1
    return "flaky-drop-1-wire" .. os.time() .. "x" .. tag
  end

  for _, which in ipairs{ "url", "tls_url" } do
    local base
    before_each(function() base = emu[which] end)

    it("once: a kept-alive connection that dies after the request is not re-sent (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      assert.is_true(select(2, post(c, base, "dingbot-ok")))     -- the connection is kept alive
      local ok, err = post(c, base, flaky_drop(), true)
      assert.is_nil(ok)
      assert.are.same({ "transport", "transport.closed" }, { err.kind, err.code })
      local reqs = emulator.requests(emu)
      assert.are.equal(2, #reqs, "the request went on the wire once")
      assert.are.equal(reqs[1].connection, reqs[2].connection)
      -- the client goes on, on a new connection
      assert.is_true(select(2, post(c, base, "dingbot-ok", true)))
      reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are_not.equal(reqs[2].connection, reqs[3].connection)
      c:close()
    end)

    it("without once, libcurl's re-send stays (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      assert.is_true(select(2, post(c, base, "dingbot-ok")))
      local code = flaky_drop()
      assert.is_true(select(2, post(c, base, code)))
      local reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are.same({ code, code }, { cjson.decode(reqs[2].body).robotCode, cjson.decode(reqs[3].body).robotCode })
      c:close()
    end)

    it("once keeps the connection alive between calls (" .. which .. ")", function()
      local c = core.new_client{ cafile = emu.cafile }
      for _ = 1, 3 do assert.is_true(select(2, post(c, base, "dingbot-ok", true))) end
      local reqs = emulator.requests(emu)
      assert.are.equal(3, #reqs)
      assert.are.equal(reqs[1].connection, reqs[3].connection)
      assert.are.equal(3, reqs[3].connection_requests)
      c:close()
    end)
  end

  -- With the default retries: refused once, never sent again.
  local REFUSED = {
    ["fault-header-flood"] = "transport.bad_response",   -- 100,000 header lines
    ["fault-header-huge"] = "transport.bad_response",    -- one 10 MiB header line
    ["fault-gzip-chunked"] = "transport.bad_response",   -- Transfer-Encoding: gzip, chunked
    ["fault-101"] = "transport.bad_response",            -- 101 Switching Protocols, unasked for
    ["fault-bad-length"] = "transport.bad_response",     -- Content-Length 99999999999999999999999
    ["fault-huge-length"] = "transport.too_large",       -- Content-Length 10^10 > max_body
  }
  for _, code in ipairs{ "fault-header-flood", "fault-header-huge", "fault-gzip-chunked", "fault-101",
                         "fault-bad-length", "fault-huge-length" } do
    it(code .. " is " .. REFUSED[code] .. ", not retried", function()
      local c = dingtalk.new{ endpoint = emu.url, sleep = function() end }
      local ok, err = pcall(c.robot.clear_plugins, { robotCode = code, token = TOKEN })
      assert.is_false(ok)
      assert.are.same({ "transport", REFUSED[code], false }, { err.kind, err.code, err.retryable })
      assert.is_nil(err.status)
      assert.are.equal(1, #emulator.requests(emu))
      -- and the client goes on
      assert.is_true(c.robot.clear_plugins{ robotCode = "dingbot-ok", token = TOKEN })
      c:close()
    end)
  end

  it("a request id is kept whole, then redacted and cut: no part of the token gets through", function()
    local c = core.new_client{}
    c:last()        -- request ids are kept from here on (an on_request hook asks first too)
    -- "x" * N, the token, " end": with N = 100 a cut at 127 bytes left
    -- the token's first 27 bytes; N = 3000 passes any small buffer
    for _, n in ipairs{ 100, 3000 } do
      local ok, err = post(c, emu.url, "fault-echo-rid-" .. n)
      assert.is_nil(ok)
      assert.are.equal("param.illegal", err.code)
      local seq, status, rid = c:last()
      assert.are.equal(400, status)
      assert.is_true(seq >= 1)
      -- last() caps like the mapping will (the mapping's cap is dt_map's)
      assert.is_true(#rid <= 127 + 3, rid)
      for _, s in ipairs{ rid, err.request_id } do
        assert.are.equal(string.rep("x", 100), s:sub(1, 100))
        assert.is_nil(reachable.leak(s, TOKEN), "token fragment in " .. s)
        for _, v in ipairs(reachable.strings(err)) do
          assert.is_nil(v:find(TOKEN:sub(1, 8), 1, true))
        end
      end
    end
    -- with the token whole inside the cap, the redaction shows
    local ok, err = post(c, emu.url, "fault-echo-rid-10")
    assert.is_nil(ok)
    local _, _, rid = c:last()
    assert.are.equal(string.rep("x", 10) .. "[redacted] end", rid)
    assert.are.equal(rid, err.request_id)
    c:close()
  end)
end)
