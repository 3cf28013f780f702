-- The emulator scenarios every transport must map the same way: robotCode
-- (and token) in, the expected result or error fields out. Used by the
-- clear_plugins spec, the secrets spec and the OpenResty comparison.
--
-- request_id = true: a non-empty request id must be on the error;
-- excerpt / message_match: Lua patterns the field must match;
-- retry_after_min: retry_after must be a number at least this large.
local M = {}

-- distinctive, and no 8-byte window of it is in any text the module writes
-- itself ("dingtalk", "redacted", ...): specs search errors for windows
M.TOKEN = "tok-Zq9X-7f3a9c2e-Wk4Rb8Hs-Ln5Jv"
-- the same for an app secret
M.SECRET = "sec-Vw3K-4b8e1d07-c6a5Qp2M-Ty9Ud"

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
  -- hostile heads and framings: limits are not retryable, and both
  -- transports give the same code
  { name = "header flood (100,000 lines)", robotCode = "fault-header-flood",
    err = { kind = "transport", code = "transport.bad_response", retryable = false } },
  { name = "one 10 MiB header line", robotCode = "fault-header-huge",
    err = { kind = "transport", code = "transport.bad_response", retryable = false } },
  { name = "Transfer-Encoding: gzip, chunked", robotCode = "fault-gzip-chunked",
    err = { kind = "transport", code = "transport.bad_response", retryable = false } },
  { name = "101 Switching Protocols", robotCode = "fault-101",
    err = { kind = "transport", code = "transport.bad_response", retryable = false } },
  { name = "Content-Length above max_body", robotCode = "fault-huge-length",
    err = { kind = "transport", code = "transport.too_large", retryable = false } },
  { name = "Content-Length past 64 bits", robotCode = "fault-bad-length",
    err = { kind = "transport", code = "transport.bad_response", retryable = false } },
  -- odd but well-formed answers
  { name = "Retry-After of 10^23 seconds", robotCode = "fault-retry-after-huge",
    err = { kind = "http", code = "http.429", status = 429, retryable = true, request_id = true,
            retry_after_min = 1e9 } },
  { name = "3xx with a platform error body", robotCode = "fault-3xx-json",
    err = { kind = "http", code = "http.302", status = 302, retryable = false } },
  { name = "C1, separator and bidi controls in the message", robotCode = "fault-unicode-controls",
    err = { kind = "api", code = "param.illegal", status = 400, retryable = false, request_id = true,
            -- every control replaced (no lead byte of U+0080-U+009F or U+2000-U+2FFF left)
            message_match = "^a[^\194\226]*b[^\194\226]*c[^\194\226]*d[^\194\226]*e[^\194\226]*f[^\194\226]*g$" } },
  { name = "numeric code and request id", robotCode = "fault-numeric-code",
    err = { kind = "api", code = "40014", status = 400, retryable = false,
            message = "invalid access_token", request_id = true } },
  -- the token echoed after padding, so that it straddles a cut (80, 127,
  -- 200 or 512 bytes) of some field: see fault-echo-* in the emulator
  { name = "token echoed everywhere after 110 bytes", robotCode = "fault-echo-pad-110",
    err = { kind = "api", code = "param.illegal", status = 400, retryable = false } },
  { name = "token echoed in a proxy's page after 160 bytes", robotCode = "fault-echo-html-160",
    err = { kind = "http", code = "http.502", status = 502, retryable = true } },
  { name = "token echoed in x-acs-request-id after 110 bytes", robotCode = "fault-echo-rid-110",
    err = { kind = "api", code = "param.illegal", status = 400, retryable = false } },
}

-- The client options the scenarios assume (the timeout makes fault-slow-1500
-- time out; the default max_body of 1 MiB makes fault-huge too large; each
-- scenario is one answer, so one attempt: retries are spec/40's subject).
M.client_options = { timeout = 800, connect_timeout = 500, retries = 0 }

return M
