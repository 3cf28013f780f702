-- The emulator scenarios every transport must map the same way: robotCode
-- (and token) in, the expected result or error fields out. Used by the
-- clear_plugins spec, the secrets spec and the OpenResty comparison.
--
-- request_id = true: a non-empty request id must be on the error;
-- excerpt / message_match: Lua patterns the field must match.
local M = {}

M.TOKEN = "tok-Zq9X-dingtalk-spec-7f3a9c2e"   -- distinctive: searched for in every error

M.list = {
  -- the documented answers
  { name = "result true", robotCode = "dingbot-ok", result = true },
  { name = "result false", robotCode = "dingbot-false", result = false },
  { name = "param.illegal (request id only in a header)", robotCode = "fault-header-requestid",
    err = { kind = "api", code = "param.illegal", status = 400, message = "Parameter error",
            retryable = false, request_id = true } },
  { name = "robotCodeNotMatch", robotCode = "dingbot-other-app",
    err = { kind = "api", code = "invalidRequest.robotCodeNotMatch", status = 400,
            message = "The app does not match the robotCode of the bound bot",
            retryable = false, request_id = true } },
  { name = "robotNotExist", robotCode = "dingbot-nobody-knows",
    err = { kind = "api", code = "invalidRequest.robotNotExist", status = 400,
            message = "The bot does not exist. Verify and add it again",
            retryable = false, request_id = true } },
  { name = "robotIsStop", robotCode = "dingbot-stopped",
    err = { kind = "api", code = "invalidRequest.robotIsStop", status = 400,
            message = "The bot has been disabled by the organization",
            retryable = false, request_id = true } },
  { name = "system.error", robotCode = "fault-system-error",
    err = { kind = "api", code = "system.error", status = 500, message = "System error",
            retryable = true, request_id = true } },
  -- the platform's global errors
  { name = "bad token", robotCode = "dingbot-ok", token = "expired-token",
    err = { kind = "api", code = "InvalidAuthentication", status = 400,
            retryable = false, request_id = true } },
  { name = "missing permission", robotCode = "fault-no-permission",
    err = { kind = "api", code = "Forbidden.AccessDenied.AccessTokenPermissionDenied", status = 403,
            retryable = false, request_id = true, accessdenieddetail = true } },
  { name = "rate limit per API", robotCode = "fault-qps-api",
    err = { kind = "api", code = "Forbidden.AccessDenied.QpsLimitForApi", status = 403,
            retryable = true, request_id = true } },
  { name = "rate limit per app key", robotCode = "fault-qps-appkey",
    err = { kind = "api", code = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", status = 403,
            retryable = true, request_id = true } },
  { name = "capitalised error keys", robotCode = "fault-capitalised",
    err = { kind = "api", code = "invalidRequest.robotNotExist", status = 400,
            message = "The bot does not exist. Verify and add it again",
            retryable = false, request_id = true } },
  -- HTTP-level failures
  { name = "429 throttle page", robotCode = "fault-429",
    err = { kind = "http", code = "http.429", status = 429, retryable = true,
            request_id = true, retry_after = 1, message_match = "^HTTP 429 Too Many Requests" } },
  { name = "HTML 502 from a proxy", robotCode = "fault-html-502",
    err = { kind = "http", code = "http.502", status = 502, retryable = true,
            excerpt = "502 Bad Gateway", message_match = "^HTTP 502 Bad Gateway: .*502 Bad Gateway" } },
  { name = "redirect refused", robotCode = "fault-redirect",
    err = { kind = "http", code = "http.302", status = 302, retryable = false,
            message_match = "not followed" } },
  -- 2xx that break the contract
  { name = "2xx not JSON", robotCode = "fault-not-json",
    err = { kind = "protocol", code = "protocol.not_json", status = 200, retryable = false,
            excerpt = "^OK" } },
  { name = "empty 2xx", robotCode = "fault-empty",
    err = { kind = "protocol", code = "protocol.empty", status = 200, retryable = false } },
  { name = "2xx without result", robotCode = "fault-no-result",
    err = { kind = "protocol", code = "protocol.no_result", status = 200, retryable = false } },
  { name = "2xx result not boolean", robotCode = "fault-result-string",
    err = { kind = "protocol", code = "protocol.bad_result", status = 200, retryable = false } },
  { name = "2xx array", robotCode = "fault-array",
    err = { kind = "protocol", code = "protocol.not_object", status = 200, retryable = false } },
  { name = "2xx result NaN", robotCode = "fault-nan",
    err = { kind = "protocol", code = "protocol.bad_result", status = 200, retryable = false } },
  { name = "deeply nested JSON", robotCode = "fault-deep-json",
    err = { kind = "protocol", code = "protocol.not_json", status = 200, retryable = false } },
  { name = "invalid UTF-8 and CR/LF in the message", robotCode = "fault-invalid-utf8",
    err = { kind = "api", code = "param.illegal", status = 400, retryable = false,
            request_id = true, message_match = "^Parameter error %?%?  X%-Injected: 1  $" } },
  { name = "server echoes the token", robotCode = "fault-echo-token",
    err = { kind = "api", code = "param.illegal", status = 400, retryable = false,
            message = "bad token [redacted]" } },
  -- no usable response
  { name = "connection closed mid-body", robotCode = "fault-close-mid-body",
    err = { kind = "transport", code = "transport.closed", retryable = true } },
  { name = "truncated chunked body", robotCode = "fault-truncated-chunked",
    err = { kind = "transport", code = "transport.closed", retryable = true } },
  { name = "body over max_body", robotCode = "fault-huge",
    err = { kind = "transport", code = "transport.too_large", retryable = false } },
  { name = "endless body", robotCode = "fault-endless",
    err = { kind = "transport", code = "transport.too_large", retryable = false } },
  { name = "slow answer past the timeout", robotCode = "fault-slow-1500",
    err = { kind = "transport", code = "transport.timeout", retryable = true } },
}

-- The client options the scenarios assume (the timeout makes fault-slow-1500
-- time out; the default max_body of 1 MiB makes fault-huge too large; each
-- scenario is one answer, so one attempt: retries are spec/40's subject).
M.client_options = { timeout = 800, connect_timeout = 500, retries = 0 }

return M
