-- A client: validated options, one C core connection (kept alive between
-- calls), and the robot operations bound to it.
local core = require "dingtalk.core"
local check = require "dingtalk.check"
local robot = require "dingtalk.robot"
local ngx_transport = require "dingtalk.transport.ngx"

local io_open = io.open
local error = error
local setmetatable = setmetatable
local tonumber = tonumber
local type = type
local str_find = string.find
local str_match = string.match
local str_lower = string.lower
local str_sub = string.sub
local fail = check.fail

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
  if scheme == "http" and not loopback(host) and insecure ~= true then
    fail("argument.insecure", "endpoint",
         "plain http is allowed only to a loopback address; use https, "
         .. "or set insecure_http = true to send the token in clear text")
  end
  return scheme .. "://" .. authority .. base
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


-- Checks every option (all before any connection is made) and returns the
-- normalised set.
function _M.options(opts)
  if opts == nil then opts = {} end
  check.args(opts, OPTIONS, "dingtalk.new")
  if opts.insecure_http ~= nil and type(opts.insecure_http) ~= "boolean" then
    fail("argument.option", "insecure_http", "insecure_http must be a boolean")
  end
  local o = {
    endpoint = parse_endpoint(opts.endpoint or _M.DEFAULT_ENDPOINT, opts.insecure_http),
    timeout = ms(opts, "timeout", _M.DEFAULT_TIMEOUT),
    connect_timeout = ms(opts, "connect_timeout", _M.DEFAULT_CONNECT_TIMEOUT),
    cafile = text(opts, "cafile"),
    proxy = text(opts, "proxy"),
    user_agent = text(opts, "user_agent") or default_user_agent,
  }
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
  if transport == "ngx" and (not ngx_transport.present() or o.proxy) then
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


-- Sends one request over this client's connection; returns ok, result|error.
-- This is the transport seam: other transports plug in here.
function mt:post(path, token, body, result_field)
  local t = self.options.transport
  if t == "ngx" or (t == nil and ngx_transport.usable()) then
    return ngx_transport.post(self, path, token, body, result_field)
  end
  return self._core:post(self.endpoint .. path, token, body, result_field)
end


function mt:close()
  self._closed = true
  self._core:close()
end


function mt:__tostring()
  return "dingtalk client " .. self.endpoint
end


function _M.new(opts)
  local o = _M.options(opts)
  local c, err = core.new_client(o)
  if not c then error(err, 0) end
  local self = setmetatable({ endpoint = o.endpoint, options = o, _core = c }, mt)
  self.robot = robot.bind(self)
  return self
end


-- for tests and introspection
_M.parse_endpoint = parse_endpoint
_M.OPTIONS = OPTIONS

return _M
