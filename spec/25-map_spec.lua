-- core.map on its own: status, headers and body in, result or error out.
-- This is the mapping every transport shares; no server involved.
local core = require "dingtalk.core"

local function map(status, body, headers, field, secret)
  return core.map(status, headers or {}, body, field, secret)
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
    assert.are.equal("dingtalk: transport.timeout: slow after 3 attempts", tostring(e))
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

  it("refuses arguments that are not a response", function()
    assert.has_error(function() core.map("x", {}, "") end)
    assert.has_error(function() core.map(200, nil, "") end)
    assert.has_error(function() core.map(99, {}, "") end)
    assert.has_error(function() core.map(200, {}, nil) end)
  end)
end)
