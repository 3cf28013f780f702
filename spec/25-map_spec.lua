-- core.map on its own: status, headers and body in, result or error out.
-- This is the mapping every transport shares; no server involved.
local core = require "dingtalk.core"
local cjson = require "cjson"

local function map(status, body, headers, field, secret, secret2)
  return core.map(status, headers or {}, body, field, secret, secret2)
end

-- Two secrets as the client holds them: the access token and the app secret.
-- Neither holds an "x", the padding the texts below put in front of them.
local TOKEN = "tok-Zq9X-7f3a9c2e-spec-b41d0e55"
local APP_SECRET = "AppSecret_0123456789-ABCDEFGHIJ-klmnopqrstuvw-yz_QRSTUVW"

local leak = require("spec.helpers.reachable").leak

-- What the cleaner makes of pieces of printable ASCII and redaction markers
-- (true), capped at max bytes plus "...": the marker is never cut.
local function capped(pieces, max)
  local out = ""
  for _, p in ipairs(pieces) do
    if p == true then
      if #out + 10 > max then return out .. "..." end
      out = out .. "[redacted]"
    elseif #out + #p > max then
      return out .. p:sub(1, max - #out) .. "..."
    else
      out = out .. p
    end
  end
  return out
end

-- A header request id: at most 127 bytes in all, "..." included.
local function rid_capped(pieces)
  local s = capped(pieces, 127)
  return #s > 127 and capped(pieces, 124) or s
end

describe("core.map", function()
  it("returns the boolean result of a 2xx answer", function()
    assert.are.same({ true, true }, { map(200, '{"result":true}', nil, "result") })
    assert.are.same({ true, false }, { map(200, '{"result":false}', nil, "result") })
    assert.are.same({ true, true }, { map(201, ' {"result" : true, "other": 1} ', nil, "result") })
  end)

  it("returns the decoded object when no result field is asked for", function()
    local ok, t = map(200, '{"pluginInfoList":[{"name":"a"}]}')
    assert.is_true(ok)
    assert.are.equal("a", t.pluginInfoList[1].name)
  end)

  local protocol = {
    { "", "protocol.empty" }, { "  \r\n", "protocol.empty" }, { "OK", "protocol.not_json" },
    { "{", "protocol.not_json" }, { "5", "protocol.not_object" }, { '"x"', "protocol.not_object" },
    { "[true]", "protocol.not_object" }, { "{}", "protocol.no_result" },
    { '{"result":null}', "protocol.bad_result" }, { '{"result":1}', "protocol.bad_result" },
    { '{"result":"true"}', "protocol.bad_result" },
    { ("["):rep(5000) .. ("]"):rep(5000), "protocol.not_json" },
  }
  for _, case in ipairs(protocol) do
    it("maps the 2xx body " .. ("%q"):format(case[1]:sub(1, 20)) .. " to " .. case[2], function()
      local ok, err = map(200, case[1], { ["x-acs-request-id"] = "RID-1" }, "result")
      assert.is_nil(ok)
      assert.are.same({ "protocol", case[2], 200, false, "RID-1" },
                      { err.kind, err.code, err.status, err.retryable, err.request_id })
    end)
  end

  it("maps platform errors, lowercase and capitalised", function()
    local _, e = map(400, '{"code":"invalidRequest.robotIsStop","message":"disabled","requestid":"A1"}')
    assert.are.same({ "api", "invalidRequest.robotIsStop", "disabled", 400, "A1", false },
                    { e.kind, e.code, e.message, e.status, e.request_id, e.retryable })
    _, e = map(400, '{"Code":"param.illegal","Message":"Parameter error","RequestId":"B2"}')
    assert.are.same({ "api", "param.illegal", "Parameter error", "B2" }, { e.kind, e.code, e.message, e.request_id })
    _, e = map(400, '{"code":"param.illegal"}', { ["x-acs-trace-id"] = "T3" })
    assert.are.same({ "T3", "(the platform gave no message)" }, { e.request_id, e.message })
  end)

  it("decides retryable by status and by code", function()
    local cases = {
      { 500, "system.error", true }, { 503, "ServiceUnavailable", true },
      { 403, "Forbidden.AccessDenied.QpsLimitForApi", true },
      { 403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", true },
      { 429, "Throttling", true }, { 403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", false },
      { 400, "InvalidAuthentication", false }, { 400, "param.illegal", false },
    }
    for _, c in ipairs(cases) do
      local _, e = map(c[1], ('{"code":"%s","message":"m"}'):format(c[2]))
      assert.are.equal(c[3], e.retryable, c[2])
    end
  end)

  it("keeps accessdenieddetail as the platform sent it", function()
    local _, e = map(403, '{"code":"Forbidden.AccessDenied.AccessTokenPermissionDenied","message":"no",'
      .. '"accessdenieddetail":{"requiredScopes":["qyapi_robot_sendmsg"]}}')
    assert.are.same({ requiredScopes = { "qyapi_robot_sendmsg" } }, e.accessdenieddetail)
  end)

  it("maps bodies without a platform code to http errors with an excerpt", function()
    local _, e = map(502, "<html><title>502 Bad Gateway</title></html>", { ["retry-after"] = "7" })
    assert.are.same({ "http", "http.502", 502, true, 7 }, { e.kind, e.code, e.status, e.retryable, e.retry_after })
    assert.matches("^HTTP 502 Bad Gateway: <html>", e.message)
    assert.are.equal("<html><title>502 Bad Gateway</title></html>", e.excerpt)
    _, e = map(404, '{"error":"nope"}')
    assert.are.same({ "http", "http.404", false }, { e.kind, e.code, e.retryable })
    _, e = map(418, "")
    assert.are.equal("HTTP 418 unexpected status", e.message)
    assert.is_nil(e.excerpt)
  end)

  it("cleans server text: control bytes, invalid UTF-8, length", function()
    local _, e = map(400, '{"code":"x\\u0000y","message":"a\\r\\nb\\u001b[31m \255 中文"}')
    assert.are.equal("x y", e.code)
    assert.are.equal("a  b [31m ? 中文", e.message)
    _, e = map(400, '{"code":"c","message":"' .. ("m"):rep(5000) .. '"}')
    assert.is_true(#e.message <= 515)
    assert.matches("%.%.%.$", e.message)
    _, e = map(502, ("x"):rep(1000))
    assert.is_true(#e.excerpt <= 203)
  end)

  it("redacts the secret from everything taken from the server", function()
    local secret = "tok-SECRET-abcdef"
    local body = '{"code":"' .. secret .. '","message":"bad ' .. secret .. '!","requestid":"' .. secret .. '"}'
    local _, e = map(400, body, nil, nil, secret)
    assert.are.same({ "[redacted]", "bad [redacted]!", "[redacted]" }, { e.code, e.message, e.request_id })
    _, e = map(502, "token=" .. secret, nil, nil, secret)
    assert.is_nil(e.message:find(secret, 1, true))
    assert.are.equal("token=[redacted]", e.excerpt)
  end)

  it("prints errors on one line, with or without a status", function()
    local _, e = map(400, '{"code":"invalidRequest.robotNotExist","message":"gone","requestid":"R9"}')
    assert.are.equal("dingtalk: invalidRequest.robotNotExist (HTTP 400): gone [request R9]", tostring(e))
    e = core.error{ kind = "transport", code = "transport.timeout", message = "slow" }
    assert.are.equal("dingtalk: transport.timeout: slow", tostring(e))
    e.attempts = 3
    assert.are.equal("dingtalk: transport.timeout: slow (3 attempts)", tostring(e))
    assert.is_true(core.is_error(e))
    assert.is_false(core.is_error({}))
    assert.is_false(core.is_error("x"))
  end)

  -- regressions found by the fuzzer (fuzz/regressions/)
  it("a 2xx body that is a bare JSON value is not an object (it crashed once)", function()
    for _, body in ipairs{ "1", '"x"', "null", "true", "false", "-0.5e3" } do
      local ok, err = map(200, body, nil, "result")
      assert.is_nil(ok)
      assert.are.equal("protocol.not_object", err.code)
    end
  end)

  it("cleans and redacts accessdenieddetail, as a string or as a table", function()
    local secret = "tok-DETAIL-secret-42"
    local _, e = map(403, '{"code":"x","accessdenieddetail":"a\\u0001b ' .. secret .. '"}', nil, nil, secret)
    assert.are.equal("a b [redacted]", e.accessdenieddetail)
    _, e = map(403, '{"code":"x","accessdenieddetail":{"requiredScopes":["s\\u0007",' .. '"' .. secret
      .. '"],"n":3,"deep":{"a":{"b":{"c":{"d":1}}}}}}', nil, nil, secret)
    assert.are.same({ "s ", "[redacted]" }, e.accessdenieddetail.requiredScopes)
    assert.are.equal(3, e.accessdenieddetail.n)
    assert.is_nil(e.accessdenieddetail.deep.a.b.c)   -- copied four levels deep at most
  end)

  it("keeps the length cap when the secret fills the body", function()
    local secret = "tok-REPEAT-secret"
    local _, e = map(502, secret:rep(500), nil, nil, secret)
    assert.is_true(#e.excerpt <= 203, #e.excerpt)
    assert.is_true(#e.message <= 120, #e.message)
    assert.is_nil(e.excerpt:find(secret, 1, true))
  end)

  -- issue 10, point 1: redaction happens before the cap, so a secret (or any
  -- piece of it of 8 bytes or more) that straddles a cut leaves nothing.
  describe("redaction before truncation", function()
    -- every field of every shape, with the secret after n bytes of padding
    local function check_all(n, text, secret, as_second)
      local s1, s2 = secret, nil
      if as_second then s1, s2 = "other-secret-0000", secret end
      local pieces = { ("x"):rep(n), true, " end" }
      local api = '{"code":"' .. text .. '","message":"' .. text .. '","requestid":"' .. text
        .. '","accessdenieddetail":{"' .. text .. '":"' .. text .. '","list":["' .. text .. '",{"deeper":"'
        .. text .. '"}]}}'
      local _, e = map(400, api, { ["x-acs-trace-id"] = text }, nil, s1, s2)
      local m = capped(pieces, 512)
      assert.are.same({ "api", m, m, m }, { e.kind, e.code, e.message, e.request_id }, "offset " .. n)
      assert.are.same({ [m] = m, list = { m, { deeper = m } } }, e.accessdenieddetail, "offset " .. n)
      assert.is_nil(leak(e, secret), "offset " .. n)

      _, e = map(502, text, { ["x-acs-request-id"] = text }, nil, s1, s2)
      assert.are.same({ "http", capped(pieces, 200), "HTTP 502 Bad Gateway: " .. capped(pieces, 80),
                        rid_capped(pieces) }, { e.kind, e.excerpt, e.message, e.request_id }, "offset " .. n)
      assert.is_nil(leak(e, secret), "offset " .. n)

      _, e = map(400, '{"code":"c","message":"m"}', { ["x-acs-request-id"] = text }, nil, s1, s2)
      assert.are.equal(rid_capped(pieces), e.request_id, "offset " .. n)
      assert.is_nil(leak(e, secret), "offset " .. n)

      _, e = map(200, text, { ["x-acs-request-id"] = text }, "result", s1, s2)
      assert.are.same({ "protocol.not_json", capped(pieces, 200), rid_capped(pieces) },
                      { e.code, e.excerpt, e.request_id }, "offset " .. n)
      assert.is_nil(leak(e, secret), "offset " .. n)
    end

    for _, case in ipairs{ { "the token", TOKEN, false }, { "the app secret", APP_SECRET, true } } do
      it("at every offset 0..600, for " .. case[1], function()
        local secret = case[2]
        for n = 0, 600 do
          check_all(n, ("x"):rep(n) .. secret .. " end", secret, case[3])
        end
      end)

      it("takes out any piece of 8 bytes or more of " .. case[1] .. ", wherever the cut", function()
        local secret = case[2]
        for n = 0, 600, 3 do
          -- a prefix, a suffix and a middle part, as a server (or a transport
          -- that cut first) would leave them
          local a = 1 + n % 9
          local b = #secret - n % 11
          for _, piece in ipairs{ secret:sub(1, 8 + n % (#secret - 8)), secret:sub(a),
                                  secret:sub(a, math.max(a + 7, b)) } do
            check_all(n, ("x"):rep(n) .. piece .. " end", secret, case[3])
          end
        end
      end)
    end

    it("agrees with a plain model (cover every 8-byte window found in a secret, then cap) on random texts",
       function()
      -- a small alphabet, so that windows shared by chance are common too
      local A = "abcd-_0123"
      local function rnd(n)
        local t = {}
        for i = 1, n do local k = math.random(#A) t[i] = A:sub(k, k) end
        return table.concat(t)
      end
      local function model(text, secrets)
        local covered = {}
        for i = 1, #text do
          for _, sec in ipairs(secrets) do
            local w = #sec >= 8 and 8 or #sec
            if #sec >= 6 and i + w - 1 <= #text then
              local piece = text:sub(i, i + w - 1)
              if (#sec >= 8 and sec:find(piece, 1, true)) or piece == sec then
                for j = i, i + w - 1 do covered[j] = true end
              end
            end
          end
        end
        local pieces, i = {}, 1
        while i <= #text do
          local j = i
          if covered[i] then
            while covered[j + 1] do j = j + 1 end
            pieces[#pieces + 1] = true
          else
            while j < #text and not covered[j + 1] do j = j + 1 end
            pieces[#pieces + 1] = text:sub(i, j)
          end
          i = j + 1
        end
        return pieces
      end
      math.randomseed(10)
      for round = 1, 1500 do
        local s1 = rnd(math.random(6, 40))
        local s2 = rnd(math.random(6, 40))
        local parts = {}
        for _ = 1, math.random(0, 12) do
          local r = math.random(3)
          local src = r == 1 and s1 or r == 2 and s2 or rnd(40)
          local a = math.random(#src)
          parts[#parts + 1] = src:sub(a, a + math.random(0, 30))
          parts[#parts + 1] = rnd(math.random(0, 40))
        end
        local text = table.concat(parts)
        local pieces = model(text, { s1, s2 })
        local what = ("round %d: %q with %q and %q"):format(round, text, s1, s2)
        local _, e = map(400, '{"code":"c","message":"' .. text .. '"}', { ["x-acs-request-id"] = text },
                         nil, s1, s2)
        local message = text == "" and "(the platform gave no message)" or capped(pieces, 512)
        assert.are.equal(message, e.message, what)
        if text ~= "" then assert.are.equal(rid_capped(pieces), e.request_id, what) end
        _, e = map(502, text, nil, nil, s1, s2)
        if text ~= "" then
          assert.are.same({ capped(pieces, 200), "HTTP 502 Bad Gateway: " .. capped(pieces, 80) },
                          { e.excerpt, e.message }, what)
        end
        local whole = {}
        for k, p in ipairs(pieces) do whole[k] = p == true and "[redacted]" or p end
        assert.are.equal(table.concat(whole), core.redact(text, s1, s2), what)
      end
    end)

    it("merges overlapping and adjacent pieces into one marker, for both secrets", function()
      local t = TOKEN
      local s = "<" .. t:sub(1, 12) .. t:sub(5, 20) .. APP_SECRET:sub(10, 30) .. t:sub(3) .. ">"
      assert.are.equal("<[redacted]>", core.redact(s, TOKEN, APP_SECRET))
      local _, e = map(400, '{"code":"c","message":"' .. s .. '"}', nil, nil, TOKEN, APP_SECRET)
      assert.are.equal("<[redacted]>", e.message)
      -- two pieces apart stay two markers; 7 bytes are not a piece
      assert.are.equal("[redacted] [redacted] " .. t:sub(1, 7),
                       core.redact(t:sub(1, 8) .. " " .. APP_SECRET:sub(-8) .. " " .. t:sub(1, 7), TOKEN, APP_SECRET))
    end)

    it("redacts a secret of 6 or 7 bytes only whole, and never one shorter", function()
      assert.are.equal("a [redacted] b [redacted]", core.redact("a s3cr3t b s3cr3t7", "s3cr3t", "s3cr3t7"))
      assert.are.equal("a s3cr3 b", core.redact("a s3cr3 b", "s3cr3t"))
      assert.are.equal("a s3cr3 b", core.redact("a s3cr3 b", "s3cr3"))
      local _, e = map(400, '{"code":"c","message":"k9Zk9Z k9Zk9"}', nil, nil, "k9Zk9Z")
      assert.are.equal("[redacted] k9Zk9", e.message)
    end)

    it("takes out a secret as JSON wrote it into a body that is shown back", function()
      -- a proxy page echoing the token call: cjson writes "/" as "\\/"
      local secret = "s3cr/et+Q/9zA/bc_D/efG"
      local body = "<pre>" .. cjson.encode{ appKey = "k", appSecret = secret } .. "</pre>"
      assert.is_truthy(body:find("\\/", 1, true))
      local _, e = map(400, body, nil, nil, TOKEN, secret)
      assert.are.equal("http", e.kind)
      assert.are.equal(body:gsub('"appSecret":"[^"]*"', '"appSecret":"[redacted]"'), e.excerpt)
      -- \u00XX escapes and the short escapes, any mix, 8 bytes or more once undone
      assert.are.equal("<[redacted]>", core.redact("<s3cr\\/et\\u002bQ\\u002F9z>", secret))
      assert.are.equal("<[redacted]>", core.redact('<a\\"b\\\\c\\td\\/e>', 'Za"b\\c\td/eZ'))
      -- 7 bytes once undone are not a piece
      assert.are.equal("<s3cr\\/et>", core.redact("<s3cr\\/et>", secret))
    end)

    it("keeps non-string values as they are in core.redact", function()
      local t = {}
      assert.are.equal(t, core.redact(t, TOKEN))
      assert.are.equal(5, core.redact(5, TOKEN))
      assert.is_nil(core.redact(nil, TOKEN))
    end)

    it("stays fast on hostile input: a 1 MiB body that repeats the secret", function()
      local t0 = os.clock()
      local _, e = map(502, TOKEN:rep(40000), nil, nil, TOKEN, APP_SECRET)
      assert.are.same({ "[redacted]", "HTTP 502 Bad Gateway: [redacted]" }, { e.excerpt, e.message })
      local a = ("a"):rep(1024)
      _, e = map(400, '{"code":"c","message":"' .. ("a"):rep(1024 * 1024) .. '"}', nil, nil, a, APP_SECRET)
      assert.are.equal("[redacted]", e.message)
      assert.are.equal("b[redacted]b", core.redact("b" .. ("a"):rep(1024 * 1024) .. "b", a))
      -- every window of the secret distinct, the body a million positions
      _, e = map(502, ("x"):rep(1000) .. APP_SECRET:rep(18000), nil, nil, TOKEN, APP_SECRET)
      assert.are.equal(("x"):rep(200) .. "...", e.excerpt)
      assert.is_true(os.clock() - t0 < 10, "took " .. (os.clock() - t0) .. " s")
    end)

    it("fails closed with a secret too long to index (over 1024 bytes)", function()
      local long = ("k"):rep(1025)
      assert.are.equal("[redacted]", core.redact("nothing secret here", long))
      local _, e = map(400, '{"code":"c","message":"hello"}', { ["x-acs-request-id"] = "R1" }, nil, TOKEN, long)
      assert.are.same({ "[redacted]", "[redacted]", "[redacted]" }, { e.code, e.message, e.request_id })
    end)
  end)

  -- issue 10, point 2: a header request id comes whole and is capped here
  it("caps a header request id at 127 bytes in all, after redaction", function()
    local _, e = map(400, '{"code":"c"}', { ["x-acs-request-id"] = ("R"):rep(127) })
    assert.are.equal(("R"):rep(127), e.request_id)
    _, e = map(400, '{"code":"c"}', { ["x-acs-request-id"] = ("R"):rep(100000) })
    assert.are.equal(("R"):rep(124) .. "...", e.request_id)
    _, e = map(400, '{"code":"c"}', { ["x-acs-trace-id"] = ("T"):rep(128) })
    assert.are.equal(("T"):rep(124) .. "...", e.request_id)
    -- the body's request id keeps the usual cap of 512
    _, e = map(400, '{"code":"c","requestid":"' .. ("B"):rep(600) .. '"}')
    assert.are.equal(("B"):rep(512) .. "...", e.request_id)
  end)

  -- issue 10, point 12
  it("reads Retry-After seconds, saturating at 2^31-1, and ignores any other form", function()
    local cases = {
      { "0", 0 }, { "7", 7 }, { " 120 ", 120 }, { "2147483647", 2147483647 },
      { "2147483648", 2147483647 }, { "100000000000000000000000", 2147483647 },
      { ("9"):rep(100000), 2147483647 }, { "18446744073709551617", 2147483647 },
      { "Wed, 21 Oct 2015 07:28:00 GMT", nil }, { "-1", nil }, { "+5", nil }, { "1.5", nil },
      { "12abc", nil }, { "", nil }, { " ", nil }, { "0x10", nil },
    }
    for _, c in ipairs(cases) do
      local _, e = map(429, "", { ["retry-after"] = c[1] })
      assert.are.equal(c[2], e.retry_after, ("%q"):format(c[1]:sub(1, 30)))
      if c[2] and math.type then assert.are.equal("integer", math.type(e.retry_after)) end
    end
  end)

  -- issue 10, point 13
  it("replaces C1 controls, line/paragraph separators and bidi controls by a space", function()
    local bad = { "\194\128", "\194\133", "\194\155", "\194\159", "\216\156", "\226\128\142", "\226\128\143",
                  "\226\128\168", "\226\128\169", "\226\128\170", "\226\128\174", "\226\129\166",
                  "\226\129\169" }
    for _, c in ipairs(bad) do
      local _, e = map(400, '{"code":"a' .. c .. 'b","message":"m' .. c .. 'n"}', { ["x-acs-request-id"] = "r" .. c })
      assert.are.same({ "a b", "m n", "r " }, { e.code, e.message, e.request_id }, ("%q"):format(c))
      _, e = map(502, "p" .. c .. "q")
      assert.are.same({ "p q", "HTTP 502 Bad Gateway: p q" }, { e.excerpt, e.message })
    end
    -- their neighbours are ordinary text and stay
    local good = { "\194\160", "\195\169", "\216\155", "\216\157", "\226\128\141", "\226\128\144",
                   "\226\128\167", "\226\128\175", "\226\129\165", "\226\129\170", "中文" }
    for _, c in ipairs(good) do
      local _, e = map(400, '{"code":"c","message":"m' .. c .. 'n"}')
      assert.are.equal("m" .. c .. "n", e.message, ("%q"):format(c))
    end
    -- as the emulator's fault-unicode-controls sends them
    local _, e = map(400, '{"code":"param.illegal","message":"a\194\133b\194\155c'
      .. '\226\128\168d\226\128\169e\226\128\174f\226\129\166g","requestid":"rid-1"}')
    assert.are.equal("a b c d e f g", e.message)
  end)

  -- issue 10, point 14
  it("gives a numeric code or request id as its integer text on every interpreter", function()
    local _, e = map(400, '{"code":40014,"message":"invalid access_token","requestid":12345}')
    assert.are.same({ "api", "40014", "invalid access_token", "12345" }, { e.kind, e.code, e.message, e.request_id })
    assert.are.equal("dingtalk: 40014 (HTTP 400): invalid access_token [request 12345]", tostring(e))
    local cases = { { "0", "0" }, { "-0", "0" }, { "-17", "-17" }, { "4.0e4", "40000" }, { "1.5", "1.5" },
                    { "9007199254740992", "9007199254740992" }, { "1e300", "1e+300" },
                    { "12345678901234567890", "1.2345678901235e+19" }, { "0.1", "0.1" } }
    for _, c in ipairs(cases) do
      _, e = map(400, '{"Code":' .. c[1] .. ',"Message":' .. c[1] .. '}')
      assert.are.same({ c[2], c[2] }, { e.code, e.message }, c[1])
    end
  end)

  -- issue 10, point 15: only status >= 400 gives an `api` error
  it("maps a 3xx (or 1xx) with a platform-looking JSON body to an http error", function()
    for _, status in ipairs{ 100, 301, 302, 303, 304, 307, 308, 399 } do
      local _, e = map(status, '{"code":"param.illegal","message":"moved","requestid":"R"}')
      assert.are.same({ "http", "http." .. status, status, false },
                      { e.kind, e.code, e.status, e.retryable }, status)
      assert.are.equal('{"code":"param.illegal","message":"moved","requestid":"R"}', e.excerpt)
    end
    local _, e = map(400, '{"code":"param.illegal","message":"m"}')
    assert.are.same({ "api", "param.illegal" }, { e.kind, e.code })
  end)

  it("refuses arguments that are not a response", function()
    assert.has_error(function() core.map("x", {}, "") end)
    assert.has_error(function() core.map(200, nil, "") end)
    assert.has_error(function() core.map(99, {}, "") end)
    assert.has_error(function() core.map(200, {}, nil) end)
  end)
end)
