-- A client: validated options, one C core connection (kept alive between
-- calls), and the robot operations bound to it.
--
-- A client is not thread-safe: it must not be used from two OS threads at
-- once (one libcurl easy handle, one token cache). Give each thread, or
-- each Lua state, its own client. Coroutines of one nginx worker may
-- share one: its token manager makes one fetch at a time.
local core = require "dingtalk.core"
local core_post = core.post
local check = require "dingtalk.check"
local robot = require "dingtalk.robot"

local io_open = io.open
local error = error
local floor = math.floor
local setmetatable = setmetatable
local pairs = pairs
local pcall = pcall
local tonumber = tonumber
local type = type
local str_find = string.find
local str_match = string.match
local str_lower = string.lower
local str_sub = string.sub
local fail = check.fail
local retry = require "dingtalk.retry"
local cjson = require "cjson"
local json = cjson.new()

-- The cosocket transport, loaded only inside nginx: plain Lua never pays
-- for it at start-up. false once known to be absent.
local ngx_transport
local function cosockets()
  if ngx_transport == nil then
    ngx_transport = type(rawget(_G, "ngx")) == "table" and require("dingtalk.transport.ngx") or false
  end
  return ngx_transport
end


local _M = { _VERSION = core._VERSION }

_M.DEFAULT_ENDPOINT = "https://api.dingtalk.io"
_M.DEFAULT_TIMEOUT = 10000          -- ms, whole call; libcurl's own is "never"
_M.DEFAULT_CONNECT_TIMEOUT = 5000   -- ms
_M.DEFAULT_MAX_BODY = 1024 * 1024   -- bytes of response kept at most

local OPTIONS = {
  endpoint = true, timeout = true, connect_timeout = true, cafile = true,
  proxy = true, user_agent = true, max_body = true, insecure_http = true,
  transport = true,
}

local default_user_agent = "lua-dingtalk/" .. core._VERSION .. " ("
  .. (_VERSION or "Lua") .. "; "
  .. (str_match(core.curl_version, "libcurl/[%w%.%-]+") or "libcurl") .. ")"


local function loopback(host)
  host = str_lower(host)
  return host == "localhost" or host == "[::1]"
      or str_find(host, "^127%.%d+%.%d+%.%d+$") ~= nil
end


-- Endpoint: scheme://host[:port][/base], nothing else. Plain http only to
-- loopback (local emulators, tests) unless insecure_http says otherwise: the
-- token travels in a header.
local function parse_endpoint(endpoint, insecure)
  if type(endpoint) ~= "string" then
    fail("argument.type", "endpoint", "endpoint must be a string URL")
  end
  -- A NUL would cut the URL in C, and another control character only
  -- fails at call time: both are refused here, before any traffic.
  if str_find(endpoint, "[%z\1-\31\127]") then
    fail("argument.endpoint", "endpoint", "endpoint must not contain control characters")
  end
  local scheme, authority, base = str_match(endpoint, "^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then
    fail("argument.endpoint", "endpoint", "endpoint must be an http(s) URL such as https://api.dingtalk.io")
  end
  scheme = str_lower(scheme)
  if scheme ~= "https" and scheme ~= "http" then
    fail("argument.endpoint", "endpoint", "endpoint scheme must be https (or http to a loopback address)")
  end
  if str_find(authority, "@", 1, true) then
    fail("argument.endpoint", "endpoint", "endpoint must not carry user credentials")
  end
  local host, port = str_match(authority, "^(%[[%x:]+%])(.*)$")
  if not host then host, port = str_match(authority, "^([%w%.%-]+)(.*)$") end
  if not host or host == "" then
    fail("argument.endpoint", "endpoint", "endpoint has no valid host")
  end
  if port ~= "" then
    local p = str_match(port, "^:(%d+)$")
    if not p or tonumber(p) < 1 or tonumber(p) > 65535 then
      fail("argument.endpoint", "endpoint", "endpoint port must be 1-65535")
    end
  end
  if str_find(base, "[?#%s]") or (base ~= "" and str_sub(base, 1, 1) ~= "/") then
    fail("argument.endpoint", "endpoint", "endpoint must not carry a query, fragment or spaces")
  end
  base = base:gsub("/+$", "")
  -- Every operation path starts with /v1.0/ (the module adds it): a base
  -- ending in a version would send /v1.0/v1.0/... and get a bare 404. A
  -- base path of another kind (a gateway's prefix) is the caller's choice.
  local version = str_match(base, "/v%d+%.%d+$")
  if version then
    fail("argument.endpoint", "endpoint",
         "endpoint must not end in " .. version .. ": the module adds /v1.0/... itself; use "
         .. scheme .. "://" .. authority .. str_sub(base, 1, #base - #version))
  end
  if scheme == "http" and not loopback(host) and insecure ~= true then
    fail("argument.insecure", "endpoint",
         "plain http is allowed only to a loopback address; use https, "
         .. "or set insecure_http = true to send the token in clear text")
  end
  return scheme .. "://" .. authority .. base, scheme
end


local function ms(opts, name, default)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < 1 or v > 2147483647 or v % 1 ~= 0 then
    fail("argument.option", name, name .. " must be a whole number of milliseconds from 1 to 2^31-1")
  end
  return v
end


local function text(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  if type(v) ~= "string" or v == "" or str_find(v, "[%z\1-\31\127]") then
    fail("argument.option", name, name .. " must be a non-empty printable string")
  end
  return v
end


-- Retries (see dingtalk.retry), app credentials (dingtalk.token) and the
-- on_request hook: on_request(ev) gets, after every attempt, a table with
-- method, path, attempt, duration (ms), ok, status, request_id, code, kind
-- and retry_in (s, when another attempt follows). Never the token or secret.
for k in pairs(retry.OPTIONS) do OPTIONS[k] = true end
OPTIONS.app_key = true
OPTIONS.app_secret = true
OPTIONS.on_request = true
OPTIONS.token_cache = true   -- a cache shared by a fleet (dingtalk.token_cache)

_M.MAX_APP_KEY = 256
_M.MAX_APP_SECRET = 1024


-- app_key and app_secret: both or neither; the secret's value never goes
-- into a message.
local function credentials(opts)
  local key, secret = opts.app_key, opts.app_secret
  if key == nil and secret == nil then return nil end
  if key == nil or secret == nil then
    local missing = key == nil and "app_key" or "app_secret"
    fail("argument.missing", missing, "app_key and app_secret go together: " .. missing .. " is missing")
  end
  check.string(opts, "app_key", _M.MAX_APP_KEY)
  check.string(opts, "app_secret", _M.MAX_APP_SECRET)
  return key
end


-- Checks every option (all before any connection is made) and returns the
-- normalised set.
-- what: the function the caller called, for the messages
-- (dingtalk.new, dingtalk.configure).
function _M.options(opts, what)
  if opts == nil then opts = {} end
  check.args(opts, OPTIONS, what or "dingtalk.new")
  local policy = retry.options(opts)
  local app_key = credentials(opts)
  if opts.on_request ~= nil and type(opts.on_request) ~= "function" then
    fail("argument.option", "on_request", "on_request must be a function")
  end
  if opts.insecure_http ~= nil and type(opts.insecure_http) ~= "boolean" then
    fail("argument.option", "insecure_http", "insecure_http must be a boolean")
  end
  local token_cache = opts.token_cache ~= nil and require("dingtalk.token_cache").check(opts.token_cache, app_key)
  local endpoint, scheme = parse_endpoint(opts.endpoint or _M.DEFAULT_ENDPOINT, opts.insecure_http)
  local o = {
    endpoint = endpoint,
    timeout = ms(opts, "timeout", _M.DEFAULT_TIMEOUT),
    connect_timeout = ms(opts, "connect_timeout", _M.DEFAULT_CONNECT_TIMEOUT),
    cafile = text(opts, "cafile"),
    proxy = text(opts, "proxy"),
    user_agent = text(opts, "user_agent") or default_user_agent,
    retry = policy, app_key = app_key,
    token_cache = token_cache or nil,
  }
  -- s: the retry loop bounds a call, token fetches included, with it
  policy.timeout = o.timeout / 1000
  -- The token rides in a header: over plain http it must reach the
  -- loopback endpoint itself, never a proxy (which would see it in clear
  -- text), unless the caller accepted clear text with insecure_http.
  -- direct: the C core uses no proxy at all, not even from the environment.
  if scheme == "http" and opts.insecure_http ~= true then
    if o.proxy then
      fail("argument.insecure", "proxy",
           "a proxy would see the token in clear text over a plain http endpoint; use https, "
           .. "or set insecure_http = true")
    end
    o.direct = true
  end
  local max_body = opts.max_body
  if max_body ~= nil and (type(max_body) ~= "number" or max_body % 1 ~= 0
                          or max_body < 1 or max_body > 2147483647) then
    fail("argument.option", "max_body", "max_body must be a whole number of bytes from 1 to 2^31-1")
  end
  o.max_body = max_body or _M.DEFAULT_MAX_BODY
  -- nil: cosockets where they work (nginx request phases, timers), else libcurl
  local transport = opts.transport
  if transport ~= nil and transport ~= "curl" and transport ~= "ngx" then
    fail("argument.option", "transport", 'transport must be "curl", "ngx" or nil (automatic)')
  end
  if transport == "ngx" and (not cosockets() or not cosockets().present() or o.proxy) then
    fail("argument.option", "transport", o.proxy
         and 'transport "ngx" cannot go through a proxy'
         or 'transport "ngx" needs nginx with lua-nginx-module')
  end
  o.transport = transport
  if o.cafile then
    local f = io_open(o.cafile, "rb")
    if not f then
      fail("argument.option", "cafile", "cafile cannot be read: " .. o.cafile)
    end
    f:close()
  end
  return o
end


local mt = {}
mt.__index = mt


-- The URL of an operation path, kept per client: a handful of operation
-- paths per client; bounded all the same, as client:call may be given
-- paths with ids in them.
local function url_of(self, path)
  local url = self.endpoint .. path
  if self._nurls < 64 then
    self._urls[path] = url
    self._nurls = self._nurls + 1
  end
  return url
end

-- The app secret of each client with app credentials, for the transports
-- to redact it from server text before they cut it. Kept here (weak keys:
-- it goes with its client), never in a table reachable from the client.
local app_secrets = setmetatable({}, { __mode = "k" })


-- Sends one request over this client's connection; returns ok, result|error.
-- This is the transport seam: other transports plug in here. once: the
-- request goes on the wire at most once (no transparent re-send).
function mt:post(path, token, body, result_field, method, once)
  local secret
  if self._tokens then secret = app_secrets[self] end
  local nt = self._cosockets
  if nt and (self._force_ngx or nt.usable()) then
    return nt.post(self, path, token, body, result_field, method, once, secret)
  end
  return core_post(self._core, self._urls[path] or url_of(self, path), token, body, result_field,
                   method, once, secret)
end


-- The batch transport over libcurl's multi interface (core.multi): n slots,
-- each an easy handle of its own with its kept-alive connection.
local curl_batch = {}
curl_batch.__index = curl_batch

-- start(slot, path, token, body, result_field) -> true | nil, error
function curl_batch:start(slot, path, token, body, result_field)
  local c = self.client
  return self.m:start(slot, c._urls[path] or url_of(c, path), token, body, result_field, self.secret)
end

-- wait(seconds) -> { { slot =, ok = true, result = r } | { slot =, ok = false, error = e }, ... }
function curl_batch:wait(seconds)
  local wait_ms = floor(seconds * 1000 + 0.5)
  if wait_ms < 0 then wait_ms = 0 elseif wait_ms > 2147483647 then wait_ms = 2147483647 end
  return self.m:wait(wait_ms)
end

function curl_batch:active()
  return self.m:active()
end

function curl_batch:close()
  return self.m:close()
end


-- batch_open(n) -> a batch transport of n slots (the seam dingtalk.batch
-- drives): light threads over cosockets where post would use them, else
-- libcurl's multi interface. bt:start(slot, path, token, body,
-- result_field), bt:wait(seconds), bt:active(), bt:close(); both give the
-- result and error tables of post.
function mt:batch_open(n)
  local secret
  if self._tokens then secret = app_secrets[self] end
  local nt = self._cosockets
  if nt and (self._force_ngx or nt.usable()) then
    return nt.batch_open(self, n, secret)
  end
  if not core.multi then
    fail("argument.transport", "transport", "this build of the C core has no batch transport (core.multi)")
  end
  local m, err = core.multi(self.options, n)
  if not m then error(err, 0) end
  return setmetatable({ m = m, client = self, secret = secret }, curl_batch)
end


function mt:close()
  self._closed = true
  self._core:close()
end


-- request(path, body, result_field, ropts) -> true, result | nil, error
-- One call with retries and managed tokens, over post (dingtalk.retry).
function mt:request(path, body, result_field, ropts)
  return retry.request(self, path, body, result_field, ropts)
end


-- true when calls may omit the token (the client has app credentials).
function mt:has_credentials()
  return self._tokens ~= nil
end


local CALL_OPTS = { token = true, retries = true }

-- call(method, path, body, opts) -> the decoded JSON object; raises an
-- error table. Any /vN.N/ operation with the same headers, retries and
-- error mapping. method: "POST" only for now (the C core sends POST).
-- body: a table (encoded as a JSON object) or a JSON string; nil is {}.
-- opts: token (else the client's app credentials), retries (0 for an
-- operation that must not run twice).
local METHODS = { GET = true, POST = true, PUT = true, DELETE = true, PATCH = true }

function mt:call(method, path, body, opts)
  if not METHODS[method] then
    fail("argument.method", "method", "method must be GET, POST, PUT, DELETE or PATCH")
  end
  if type(path) ~= "string" or not str_find(path, "^/v%d+%.%d+/[%w%-%._~/]+$")
      or str_find(path, "..", 1, true) then
    fail("argument.path", "path", "path must look like /v1.0/robot/... (no query, no spaces)")
  end
  if method == "GET" then
    if body ~= nil then fail("argument.body", "body", "a GET sends no body") end
    body = ""
  elseif body == nil then
    body = "{}"
  elseif type(body) == "table" then
    local ok, s = pcall(json.encode, body)
    if not ok then fail("argument.body", "body", "body cannot be encoded as JSON") end
    body = s
  elseif type(body) ~= "string" then
    fail("argument.type", "body", "body must be a table, a JSON string or nil")
  end
  opts = opts or {}
  check.args(opts, CALL_OPTS, "call")
  local tok = opts.token
  if tok ~= nil or not self._tokens then tok = check.string(opts, "token", robot.MAX_TOKEN) end
  local r = opts.retries
  if r ~= nil and (type(r) ~= "number" or r < 0 or r > 100 or r % 1 ~= 0) then
    fail("argument.option", "retries", "retries must be a whole number from 0 to 100")
  end
  local ok, res = self:request(path, body, nil, { token = tok, retries = r, method = method })
  if not ok then error(res, 0) end
  return res
end


function mt:__tostring()
  return "dingtalk client " .. self.endpoint
end


-- new(opts[, what]): what names the caller's function in argument errors
-- (dingtalk.configure passes its own name).
function _M.new(opts, what)
  local o = _M.options(opts, what)
  local c, err = core.new_client(o)
  if not c then error(err, 0) end
  local self = setmetatable({ endpoint = o.endpoint, options = o, _core = c,
                              _urls = {}, _nurls = 0 }, mt)
  -- the transport choice that does not change per call, made once
  self._cosockets = o.transport ~= "curl" and cosockets() or false
  self._force_ngx = o.transport == "ngx"
  self._retry = o.retry
  self._on_request = opts and opts.on_request
  if o.app_key then   -- loaded only by clients that manage tokens
    app_secrets[self] = opts.app_secret
    self._tokens = require("dingtalk.token").new(self, o.app_key, opts.app_secret, o.retry,
                                                       o.token_cache)
  end
  self.robot = robot.bind(self)
  return self
end


-- for tests and introspection
_M.parse_endpoint = parse_endpoint
_M.OPTIONS = OPTIONS

return _M
