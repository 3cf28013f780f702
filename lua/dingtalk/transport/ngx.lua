-- The cosocket transport: the same request as the libcurl path, sent with
-- ngx.socket.tcp so that a call from a request phase or a timer yields to
-- nginx's event loop instead of blocking the worker. The response goes
-- through the C core's mapping (core.map), so results and error tables are
-- those of the libcurl path; transport failures get libcurl's codes.
--
-- Loadable anywhere (plain Lua too): `ngx` is looked up per call.
local core = require "dingtalk.core"

local concat = table.concat
local floor = math.floor
local min = math.min
local tonumber = tonumber
local setmetatable = setmetatable
local pairs = pairs
local pcall = pcall
local co_status = coroutine.status
local tostring = tostring
local type = type
local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub

local _M = {}

-- Phases in which lua-nginx-module lets a handler use cosockets (its
-- ngx.socket.tcp "context" list). Everywhere else libcurl serves.
_M.COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true,
  timer = true, ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local MAX_TOKEN = 1024        -- as the C core's DT_TOKEN_MAX
-- One response head, all its lines (the C transport's limit too). The
-- header values core.map reads (request ids, Retry-After) go to it whole:
-- it takes the secrets out first and only then cuts them to size, so a
-- cut here could leave part of a secret the redaction no longer sees.
local MAX_HEAD = 100 * 1024
local MAX_LINE = 4096         -- a chunk-size or trailer line
local READ_PIECE = 64 * 1024
-- The largest Content-Length libcurl takes (a signed 64-bit curl_off_t),
-- as a digit string: a longer or larger value is an overflow, not a size.
local MAX_LENGTH = "9223372036854775807"
local DEFAULT_PORT = { http = 80, https = 443 }
local TOO_LARGE = "response body larger than max_body"


-- true inside nginx with lua-nginx-module (any phase).
function _M.present()
  local n = ngx
  return type(n) == "table" and type(n.get_phase) == "function"
      and type(n.socket) == "table"
end

-- true when this call runs where cosockets work.
function _M.usable()
  return _M.present() and _M.COSOCKET_PHASES[ngx.get_phase()] == true
end


local function fail(code, message, retryable)
  return nil, core.error{ kind = "transport", code = code, message = message,
                          retryable = retryable == true }
end

local function argument(code, field, message)
  return nil, core.error{ kind = "argument", code = code, field = field,
                          message = message, retryable = false }
end

-- nil, or the argument error of a token the transport cannot send
local function bad_token(token)
  if type(token) ~= "string" or #token == 0 or #token > MAX_TOKEN then
    return argument("argument.token", "token", "token must be 1 to 1024 bytes")
  end
  if str_find(token, "[%z\1-\31\127]") then
    return argument("argument.control_char", "token", "token contains a control character")
  end
end


-- Endpoints are normalised by client.options (scheme://host[:port][/base]);
-- the parts are worked out once per endpoint string.
local endpoints = {}

local function endpoint(url, cafile)
  local key = url .. "|" .. (cafile or "")
  local ep = endpoints[key]
  if ep then return ep end
  local scheme, authority, base = str_match(url, "^(%a+)://([^/]*)(.*)$")
  scheme = str_lower(scheme)
  local host, port = str_match(authority, "^%[([%x:]+)%]:?(%d*)$")
  if not host then host, port = str_match(authority, "^([^:]+):?(%d*)$") end
  port = tonumber(port) or DEFAULT_PORT[scheme]
  -- libcurl leaves the default port out of Host:, and so do we.
  local hosthdr = authority
  if port == DEFAULT_PORT[scheme] then hosthdr = str_match(authority, "^(.-):?%d*$") end
  -- nginx's resolver does not read /etc/hosts; libcurl would map localhost.
  local addr = host
  if str_lower(host) == "localhost" then addr = "127.0.0.1" end
  -- connect() takes an IPv6 address only in brackets ("::1" is read as a
  -- host "" with port ":1")
  local v6 = str_find(host, ":", 1, true) ~= nil
  if v6 then addr = "[" .. host .. "]" end
  -- a client with a cafile of its own gets connections of its own: one
  -- verified against another trust store is never handed to it
  local pool = "dingtalk:" .. scheme .. "://" .. host .. ":" .. port .. (cafile and " ca=" .. cafile or "")
  ep = {
    tls = scheme == "https", host = host, addr = addr, port = port,
    base = base, hosthdr = hosthdr, pool = pool,
    -- at-most-once calls connect through a pool nothing is ever kept alive
    -- into: always a fresh connection, never one the server may have
    -- dropped already (and a dead one is not silently replaced)
    once_pool = pool .. " once",
    -- a name nginx's resolver must look up (an IP literal needs none)
    named = not v6 and not str_find(addr, "^%d+%.%d+%.%d+%.%d+$"),
  }
  -- connect()'s options, made once: { pool = } for plain calls, at-most-once
  -- calls, and each batch slot (made on its first use)
  ep.pool_opts = { pool = pool }
  ep.once_opts = { pool = ep.once_pool }
  ep.slot_opts = {}
  endpoints[key] = ep
  return ep
end


-- Milliseconds left before the deadline (at least 0). nginx's clock as
-- it stands: send() reads the time afresh when a call starts, and the
-- event loop does after every wait (each cosocket operation that waited);
-- between those, this worker ran Lua, a few microseconds.
local function left(st)
  local ms = floor((st.deadline - ngx.now()) * 1000 + 0.5)
  if ms < 0 then return 0 end
  return ms
end

-- The socket's send and read timeouts to ms, the connect timeout to the
-- call's (settimeouts is a call into C: made only when ms changed).
local function timeouts(st, ms)
  if st.tmo ~= ms then
    st.tmo = ms
    st.sock:settimeouts(st.cms, ms, ms)
  end
end

local function timed_out(st, what)
  local n = ngx
  n.update_time()
  return fail("transport.timeout", str_format("Operation timed out after %d milliseconds %s",
    floor((n.now() - st.start) * 1000 + 0.5), what), true)
end


-- Reading: a buffer over receiveany, so that every wait is bounded by the
-- call's deadline (a read timeout alone restarts with each byte that
-- trickles in).
local function fill(st, what)
  local ms = left(st)
  if ms <= 0 then return timed_out(st, what) end
  timeouts(st, ms)
  local data, err = st.sock:receiveany(READ_PIECE)
  if not data then
    if err == "timeout" then return timed_out(st, what) end
    st.eof = err
    return nil
  end
  st.got = st.got + #data
  if st.pos > #st.buf then
    st.buf, st.pos = data, 1
  else
    st.buf, st.pos = str_sub(st.buf, st.pos) .. data, 1
  end
  return true
end

local function closed(st, what)
  return fail("transport.closed", str_format("connection %s %s", st.eof or "closed", what), true)
end

-- More bytes in st.buf, or nil and the error saying why there are none.
local function more(st, what)
  local ok, err = fill(st, what)
  if ok ~= nil then return true end
  if err then return nil, err end
  return closed(st, what)
end

-- One line (without its CR LF), at most `max` bytes.
local function read_line(st, max, what)
  while true do
    local e = str_find(st.buf, "\n", st.pos, true)
    if e then
      local line = str_sub(st.buf, st.pos, e - 1)
      st.pos = e + 1
      if str_byte(line, -1) == 13 then line = str_sub(line, 1, -2) end
      return line
    end
    if #st.buf - st.pos + 1 > max then
      return fail("transport.closed", "line too long " .. what, true)
    end
    local ok, err = more(st, what)
    if not ok then return nil, err end
  end
end

-- The body so far: false, one string, or a table of pieces (a body that
-- came in several reads). Most bodies are one piece, taken as it is.
local function add_body(st, piece)
  local b = st.body
  if not b then
    st.body = piece
  elseif type(b) == "string" then
    st.body = { b, piece }
  else
    b[#b + 1] = piece
  end
end

local function body_of(st)
  local b = st.body
  if not b then return "" end
  if type(b) == "string" then return b end
  return concat(b)
end

-- Exactly n bytes, appended to the body. what: where we are, for the error
-- message; a number is a Content-Length (the message is made only when
-- it is needed).
local function read_body_bytes(st, n, what)
  while n > 0 do
    local have = #st.buf - st.pos + 1
    if have > 0 then
      local take = min(have, n)
      add_body(st, str_sub(st.buf, st.pos, st.pos + take - 1))
      st.pos = st.pos + take
      n = n - take
    else
      if type(what) == "number" then
        what = str_format("in the response body (Content-Length %d)", what)
      end
      local ok, err = more(st, what)
      if not ok then return nil, err end
    end
  end
  return true
end


-- The bytes i..j of s without leading and trailing blanks. (The pattern
-- "^[ \t]*(.-)[ \t]*$" takes quadratic time on a long run of blanks, which
-- a server picks; this is one pass, and compiled by LuaJIT.)
local function trimmed(s, i, j)
  local b = str_byte(s, i)
  while i <= j and (b == 32 or b == 9) do
    i = i + 1
    b = str_byte(s, i)
  end
  b = str_byte(s, j)
  while j >= i and (b == 32 or b == 9) do
    j = j - 1
    b = str_byte(s, j)
  end
  return str_sub(s, i, j)
end

-- The header names read (lowercase), by length: the others are skipped
-- without making a string of them.
local WANTED = {
  [10] = { connection = "h_conn" },
  [11] = { ["retry-after"] = "h_ra" },
  [14] = { ["content-length"] = "h_cl", ["x-acs-trace-id"] = "h_tid" },
  [16] = { ["x-acs-request-id"] = "h_rid" },
  [17] = { ["transfer-encoding"] = "h_te" },
}

-- %s of Lua patterns: space, \t \n \v \f \r
local function blank_byte(b)
  return b == 32 or (b >= 9 and b <= 13)
end

-- The header line at s[i..j] (no CR LF): "name:value", the name without
-- blanks; other lines are ignored. The values read go to st (last one
-- wins), Transfer-Encoding repeated is one list (RFC 9110 5.3): "gzip"
-- then "chunked" is "gzip, chunked", which must not pass for plain chunked.
local function header_line(st, s, i, j)
  local c = str_find(s, ":", i, true)
  if not c or c > j or c == i then return end
  local len = c - i
  local names = WANTED[len]
  for k = i, c - 1 do
    if blank_byte(str_byte(s, k)) then return end
  end
  if not names then return end
  local field = names[str_lower(str_sub(s, i, c - 1))]
  if not field then return end
  local value = trimmed(s, c + 1, j)
  if field == "h_te" and st.h_te then value = st.h_te .. ", " .. value end
  st[field] = value
end

local function digit(b) return b and b >= 48 and b <= 57 end

-- The status line at s[i..j]: "HTTP/1.x NNN..." -> status, minor
local function status_line(s, i, j)
  if j - i + 1 < 12 or str_sub(s, i, i + 4) ~= "HTTP/" then return nil end
  local major, dot, minor, sp = str_byte(s, i + 5, i + 8)
  local a, b, c = str_byte(s, i + 9, i + 11)
  if not (digit(major) and dot == 46 and digit(minor) and sp == 32
          and digit(a) and digit(b) and digit(c)) then
    return nil
  end
  if major ~= 49 then return nil end   -- "1"
  return (a - 48) * 100 + (b - 48) * 10 + (c - 48), minor - 48
end

-- The index of the LF that ends the response head (its empty line) in
-- st.buf, or nil when the head is not all there yet. The empty line
-- counts only after the status line (as the pattern "\n\r?\n" would).
local function head_end(buf, pos)
  local p = pos
  while true do
    local e = str_find(buf, "\n", p, true)
    if not e then return nil end
    if p > pos and (e == p or (e == p + 1 and str_byte(buf, p) == 13)) then return e end
    p = e + 1
  end
end

-- The status line and headers of one response. Returns status, minor (the
-- HTTP minor version); the headers read are in st.h_* (lowercase names,
-- last value wins).
local function read_head(st)
  local stop
  while true do
    if #st.buf - st.pos + 1 >= 5 and str_sub(st.buf, st.pos, st.pos + 4) ~= "HTTP/" then
      -- libcurl refuses HTTP/0.9 answers (CURLE_UNSUPPORTED_PROTOCOL)
      return fail("transport.bad_response", "the server's answer is not HTTP")
    end
    stop = head_end(st.buf, st.pos)
    if stop then break end
    if #st.buf - st.pos + 1 > MAX_HEAD then
      return fail("transport.bad_response", "response headers larger than 100 KiB")
    end
    local ok, err = fill(st, "waiting for the response")
    if ok == nil then
      if err then return nil, err end
      if st.got == 0 then
        return fail("transport.closed",
                    "Empty reply from server (connection " .. (st.eof or "closed") .. ")", true)
      end
      return closed(st, "in the response headers")
    end
  end
  if stop - st.pos + 1 > MAX_HEAD then
    return fail("transport.bad_response", "response headers larger than 100 KiB")
  end
  local buf = st.buf
  st.h_conn, st.h_te, st.h_cl, st.h_rid, st.h_tid, st.h_ra = false, false, false, false, false, false
  local p, status, minor = st.pos, nil, nil
  while p <= stop do
    local e = str_find(buf, "\n", p, true)
    local j = e - 1
    if j >= p and str_byte(buf, j) == 13 then j = j - 1 end
    if not status then
      status, minor = status_line(buf, p, j)
      if not status then
        return fail("transport.bad_response", "unsupported HTTP status line")
      end
    elseif j >= p then
      header_line(st, buf, p, j)
    end
    p = e + 1
  end
  st.pos = stop + 1
  return status, minor
end


local function read_chunked(st, max)
  local total = 0
  while true do
    local line, err = read_line(st, MAX_LINE, "in a chunk size line")
    if not line then return nil, err end
    local hex = str_match(line, "^%s*(%x+)%s*[;]?")
    -- libcurl reads up to 16 hex digits into a signed 64-bit size: "Illegal
    -- or missing hexadecimal sequence" or a hex-length error otherwise
    -- (CURLE_RECV_ERROR). A size it takes but we cannot hold is past
    -- max_body anyway, which the bytes that follow decide (as libcurl).
    if not hex or #hex > 16 or (#hex == 16 and str_byte(hex) > 55) then   -- "7"
      return fail("transport.closed", "bad chunk size in a chunked response", true)
    end
    local size = tonumber(hex, 16)
    if size == 0 then break end
    if total + size > max then
      -- as libcurl, fail only once bytes past the cap are actually there
      local ok
      ok, err = read_body_bytes(st, max - total + 1, "in the response body")
      if not ok then return nil, err end
      return fail("transport.too_large", TOO_LARGE)
    end
    local ok
    ok, err = read_body_bytes(st, size, "in the response body")
    if not ok then return nil, err end
    total = total + size
    line, err = read_line(st, MAX_LINE, "after a chunk")
    if not line then return nil, err end
    if line ~= "" then
      return fail("transport.closed", "bad chunk terminator in a chunked response", true)
    end
  end
  -- trailers, up to the empty line
  while true do
    local line, err = read_line(st, MAX_LINE, "in the chunked trailer")
    if not line then return nil, err end
    if line == "" then return true end
  end
end


local function read_to_close(st, max)
  local total = 0
  while true do
    local have = #st.buf - st.pos + 1
    if have > 0 then
      total = total + have
      if total > max then return fail("transport.too_large", TOO_LARGE) end
      add_body(st, str_sub(st.buf, st.pos))
      st.buf, st.pos = "", 1
    end
    local ok, err = fill(st, "in the response body")
    if ok == nil then
      if err then return nil, err end
      return true
    end
  end
end


-- A Content-Length value: digits only -> them without leading zeros (one
-- "0" left for zero), else nil.
local function length_digits(cl)
  local n = #cl
  if n == 0 then return nil end
  local first
  for i = 1, n do
    local b = str_byte(cl, i)
    if b < 48 or b > 57 then return nil end
    if not first and b ~= 48 then first = i end
  end
  return str_sub(cl, first or n)
end

-- The whole response: status, body, reusable? (the headers core.map reads
-- are left in st.h_rid, st.h_tid, st.h_ra)
local function read_response(st, max)
  local status, minor
  repeat
    status, minor = read_head(st)
    if not status then return nil, minor end
  until status >= 200 or status == 101
  if status == 101 then
    return fail("transport.bad_response", "unexpected 101 Switching Protocols")
  end
  local conn = st.h_conn
  local reuse
  if minor >= 1 then
    reuse = not (conn and str_find(str_lower(conn), "close", 1, true))
  else
    reuse = minor == 0 and conn and str_find(str_lower(conn), "keep-alive", 1, true) ~= nil
  end
  local te = st.h_te
  -- Only plain chunked is read. Anything else ("gzip, chunked", a coding
  -- we would not undo) leaves the body's framing or its bytes unknown:
  -- the libcurl transport refuses it the same way.
  if te and str_lower(te) ~= "chunked" then
    return fail("transport.bad_response", "unsupported Transfer-Encoding in the response")
  end
  local cl = st.h_cl
  local ok, err
  if status == 204 or status == 304 then
    ok = true
  elseif te then
    ok, err = read_chunked(st, max)
  elseif cl then
    local n = length_digits(cl)
    if not n then
      return fail("transport.bad_response", "invalid Content-Length in the response")
    end
    -- past a signed 64-bit integer: an overflow to libcurl too, and no size
    if #n > #MAX_LENGTH or (#n == #MAX_LENGTH and n > MAX_LENGTH) then
      return fail("transport.bad_response", "Content-Length in the response out of range")
    end
    n = tonumber(n)
    if n > max then return fail("transport.too_large", TOO_LARGE) end
    ok, err = read_body_bytes(st, n, n)
  else
    reuse = false
    ok, err = read_to_close(st, max)
  end
  if not ok then return nil, err end
  if st.pos <= #st.buf then reuse = false end   -- bytes nobody asked for
  return status, body_of(st), reuse
end


local RESOLVING = {}   -- what the alarm thread returns

local function alarm(seconds)
  ngx.sleep(seconds)
  return RESOLVING
end

-- (ngx.thread.spawn takes Lua functions only, not sock.connect itself)
local function connect(sock, addr, port, opts)
  return sock:connect(addr, port, opts)
end

-- sock:connect, bounded by ms even while nginx's resolver looks the name up:
-- the socket's connect timeout starts only once the name is resolved, and
-- the resolver waits for resolver_timeout (30 s by default), so the connect
-- runs in a light thread that is killed at the deadline (which aborts the
-- lookup). A socket connected in a light thread serves its parent (checked
-- on lua-nginx-module 0.10.23; light threads run in every phase of
-- COSOCKET_PHASES). Returns ok, err; err RESOLVING on timeout.
local function connect_within(sock, ep, pool_opts, ms)
  local n = ngx
  local worker = n.thread.spawn(connect, sock, ep.addr, ep.port, pool_opts)
  local timer = n.thread.spawn(alarm, ms / 1000)
  local ran, ok, err = n.thread.wait(worker, timer)
  if ok == RESOLVING then
    n.thread.kill(worker)
    return nil, RESOLVING
  end
  n.thread.kill(timer)
  if not ran then return nil, ok end   -- connect raised (ok: the message)
  return ok, err
end


-- Connects (or takes a pooled connection) and does the TLS handshake.
-- once: a fresh connection that is never kept alive afterwards.
-- slot: a batch slot, whose connections live in a pool of their own (as
-- the libcurl multi keeps one easy handle, and its connection, per slot).
local function open(st, ep, connect_timeout, once, slot)
  local n = ngx
  local sock, err = n.socket.tcp()
  if not sock then return fail("transport.other", "cannot create a socket: " .. tostring(err)) end
  st.sock = sock
  local ms = left(st)
  if ms <= 0 then return timed_out(st, "before connecting") end
  local cms = min(connect_timeout, ms)
  st.cms = cms
  timeouts(st, ms)
  local ok
  local pool_opts = once and ep.once_opts or ep.pool_opts
  if slot and not once then
    pool_opts = ep.slot_opts[slot]
    if not pool_opts then
      pool_opts = { pool = ep.pool .. " slot " .. slot }
      ep.slot_opts[slot] = pool_opts
    end
  end
  if ep.named then
    -- as libcurl's connect timeout, this one covers the name lookup too
    ok, err = connect_within(sock, ep, pool_opts, cms)
  else
    ok, err = sock:connect(ep.addr, ep.port, pool_opts)
  end
  if not ok then
    if err == RESOLVING then return timed_out(st, "resolving " .. ep.host) end
    err = tostring(err)
    local where = ep.host .. " port " .. ep.port
    if err == "timeout" then return timed_out(st, "connecting to " .. where) end
    if str_find(err, "resolve", 1, true) or str_find(err, "resolver", 1, true) then
      return fail("transport.dns", "Could not resolve host: " .. ep.host .. " (" .. err
        .. "; nginx needs a `resolver` directive for host names)", true)
    end
    return fail("transport.connect", "Failed to connect to " .. where .. ": " .. err, true)
  end
  st.reused = sock:getreusedtimes() or 0
  if ep.tls and st.reused == 0 then
    ms = left(st)
    if ms <= 0 then return timed_out(st, "before the TLS handshake") end
    timeouts(st, ms)
    -- verification on: trust comes from lua_ssl_trusted_certificate
    ok, err = sock:sslhandshake(false, ep.host, true)
    if not ok then
      if err == "timeout" then return timed_out(st, "in the TLS handshake with " .. ep.host) end
      return fail("transport.tls", "TLS handshake with " .. ep.host .. " failed: " .. tostring(err))
    end
    -- lua-nginx-module before the fix of openresty/lua-nginx-module#2506
    -- returns true when the handshake completes at once but verification
    -- fails; the socket is closed by then, which is how we tell.
    if not sock:getreusedtimes() then
      return fail("transport.tls", "TLS handshake with " .. ep.host
        .. " failed: certificate verification failed (nginx's error log has the reason)")
    end
  end
  return true
end


local function attempt(st, ep, opts, request, once, slot)
  local ok, err = open(st, ep, opts.connect_timeout, once, slot)
  if not ok then return nil, err end
  local sock = st.sock
  local ms = left(st)
  if ms <= 0 then return timed_out(st, "before sending the request") end
  timeouts(st, ms)
  ok, err = sock:send(request)
  if not ok then
    if err == "timeout" then return timed_out(st, "sending the request") end
    st.eof = err
    return fail("transport.closed", "sending the request failed: " .. tostring(err), true)
  end
  return read_response(st, opts.max_body)
end


local warned = setmetatable({}, { __mode = "k" })

-- The state of a call (socket, read buffer, the headers read), from a
-- few kept for reuse: a table of 18 fields made and collected per call
-- was a measurable part of its cost. Taken and given back with no yield
-- in between, so the coroutines of a worker never share one; a call that
-- is killed midway just leaves its state to the collector.
local spare, nspare = {}, 0
local MAX_SPARE = 64

local function state(now, timeout)
  local st
  if nspare > 0 then
    st = spare[nspare]
    spare[nspare] = nil
    nspare = nspare - 1
  else
    -- every field a call sets, set here: the table is made at its size
    st = { start = 0, deadline = 0, buf = "", pos = 1, got = 0,
           sock = false, reused = 0, cms = 0, tmo = false, eof = false, body = false,
           h_conn = false, h_te = false, h_cl = false, h_rid = false, h_tid = false, h_ra = false }
  end
  st.start, st.deadline = now, now + timeout / 1000
  return st
end

-- Back for reuse, holding nothing of the call (not its socket, not a byte
-- the server sent).
local function release(st)
  st.buf, st.pos, st.got, st.sock, st.reused, st.cms, st.tmo, st.eof, st.body =
    "", 1, 0, false, 0, 0, false, false, false
  st.h_conn, st.h_te, st.h_cl, st.h_rid, st.h_tid, st.h_ra = false, false, false, false, false, false
  if nspare < MAX_SPARE then
    nspare = nspare + 1
    spare[nspare] = st
  end
end

-- Per client (weak keys, never reachable from the client): its endpoint's
-- parts and the bytes of its last request, sent again as they are while
-- path, token, body, method and User-Agent stay the same (a service
-- clearing bots calls with one token; the C core keeps its token header
-- line per client for the same reason). The token in it was checked when
-- the request was built.
local last = setmetatable({}, { __mode = "k" })

-- post(client, path, token, body, result_field [, method [, once [, secret]]])
--   -> true, result | nil, error
-- The client is dingtalk.client's: endpoint, options (timeout,
-- connect_timeout, max_body, user_agent, proxy, cafile). once: the request
-- goes on the wire at most once (a fresh connection, no second try on a
-- dead one). secret: a second secret (the app secret), taken out of every
-- text the server sent, as the token is.
local function send(client, path, token, body, result_field, method, once, secret, slot)
  local n = ngx
  if secret ~= nil and type(secret) ~= "string" then
    -- what the C core's post does (luaL_optlstring), before any I/O
    if type(secret) ~= "number" then
      error("bad argument #8 to 'post' (string expected, got " .. type(secret) .. ")", 2)
    end
    secret = tostring(secret)
  end
  if not _M.usable() then
    local phase = type(n) == "table" and n.get_phase and n.get_phase() or "plain Lua"
    return argument("argument.transport", "transport",
      "transport \"ngx\" needs a phase where cosockets work (rewrite, access, content, timer, ...), not "
      .. tostring(phase))
  end
  -- The same checks, in the same order, as the C core's client:post.
  if client._closed then return argument("argument.closed", "client", "the client is closed") end
  local opts = client.options
  local lc = last[client]
  if not lc then
    lc = {}
    last[client] = lc
  end
  local method_ = method or "POST"
  local request = lc.request
  if not (request and lc.token == token and lc.path == path and lc.body == body
          and lc.method == method_ and lc.ua == opts.user_agent and lc.url == client.endpoint
          and lc.cafile == opts.cafile) then
    request = nil
    -- token nil: no access-token header (the token call itself)
    if token ~= nil then
      local e1, e2 = bad_token(token)
      if e2 then return e1, e2 end
    end
  end
  if opts.proxy then
    return argument("argument.transport", "proxy",
      "the cosocket transport does not go through a proxy; use transport = \"curl\" "
      .. "(which blocks the nginx worker) or reach the endpoint directly")
  end
  if opts.cafile and not warned[client] then
    warned[client] = true
    n.log(n.WARN, "dingtalk: the cosocket transport ignores cafile; ",
          "lua_ssl_trusted_certificate must hold that CA")
  end
  local ep = lc.ep
  if not request then
    ep = endpoint(client.endpoint, opts.cafile)
    request = concat{
      method_, " ", ep.base, path, " HTTP/1.1\r\n",
      "Host: ", ep.hosthdr, "\r\n",
      "User-Agent: ", opts.user_agent, "\r\n",
      token and "x-acs-dingtalk-access-token: " or "", token or "", token and "\r\n" or "",
      "Content-Type: application/json\r\n",
      "Accept: application/json\r\n",
      -- like libcurl: a GET carries no body and no Content-Length
      method == "GET" and "" or "Content-Length: " .. #body .. "\r\n",
      "\r\n",
      method == "GET" and "" or body,
    }
    -- not the token call's (token nil): its body holds the app secret
    if token ~= nil then
      lc.request, lc.token, lc.path, lc.body, lc.method = request, token, path, body, method_
      lc.ua, lc.url, lc.cafile, lc.ep = opts.user_agent, client.endpoint, opts.cafile, ep
    end
  end
  n.update_time()
  local now = n.now()
  local st, status, data, reuse
  for try = 1, 2 do
    if st then release(st) end
    st = state(now, opts.timeout)
    status, data, reuse = attempt(st, ep, opts, request, once, slot)
    -- a pooled connection the server had already closed: like libcurl, one
    -- more try on a fresh one (clearing is idempotent). Never for once: the
    -- server may have read the request before it closed (once calls take
    -- no pooled connection anyway).
    local again = try == 1 and not once and not status and st.got == 0 and (st.reused or 0) > 0
        and data.code == "transport.closed"
    if not again then break end
    st.sock:close()
  end
  if not status then
    if st.sock then st.sock:close() end
    release(st)
    return nil, data
  end
  if reuse and not once then st.sock:setkeepalive() else st.sock:close() end
  local rid_h, tid_h = st.h_rid or nil, st.h_tid or nil
  local headers = { ["x-acs-request-id"] = rid_h, ["x-acs-trace-id"] = tid_h, ["retry-after"] = st.h_ra or nil }
  release(st)
  local ok, res = core.map(status, headers, data, result_field, token, secret)
  -- a batch slot also wants a good answer's request id (the journal keeps it)
  local rid = slot and ok and (rid_h or tid_h)
  if rid and rid ~= "" then return ok, res, core.request_id(rid, token, secret) end
  return ok, res
end

function _M.post(client, path, token, body, result_field, method, once, secret)
  return send(client, path, token, body, result_field, method, once, secret)
end


-- The batch transport inside nginx: one light thread (ngx.thread) per
-- request in flight, each over post's cosocket path. Slots as the libcurl
-- multi's: 1..n, one request each at a time, each keeping its connection
-- alive in a pool of its own. wait() sleeps on a semaphore each finishing
-- thread posts, then takes the finished (dead) threads' outcomes with
-- ngx.thread.wait, one thread at a time: a wait for several threads at once
-- leaves the others marked as waited for, and the first of them to finish
-- later would resume the batch's coroutine wherever it then is (in a
-- cosocket read of the token fetch, say) with that thread's values.
local function one(self, slot, path, token, body, result_field)
  local ok, done, res, rid = pcall(send, self.client, path, token, body, result_field, "POST", false,
                                   self.secret, slot)
  if not ok then
    done, res = false, core.error{ kind = "transport", code = "transport.other", retryable = false,
                                   message = "the request raised: " .. tostring(done) }
  end
  self.sema:post(1)   -- no yield from here to the end: ended when the waiter runs
  return slot, done, res, rid
end

local batch = {}
batch.__index = batch

-- start(slot, path, token, body, result_field) -> true | nil, error
function batch:start(slot, path, token, body, result_field)
  if type(slot) ~= "number" or slot < 1 or slot > self.n or slot % 1 ~= 0 then
    return argument("argument.slot", "slot", "slot must be a whole number from 1 to " .. self.n)
  end
  if self.threads[slot] then
    return argument("argument.slot", "slot", "slot " .. slot .. " is busy")
  end
  local e1, e2 = bad_token(token)
  if e2 then return e1, e2 end
  local th, err = ngx.thread.spawn(one, self, slot, path, token, body, result_field)
  if not th then
    return fail("transport.other", "cannot start a light thread: " .. tostring(err))
  end
  self.threads[slot] = th
  self.count = self.count + 1
  return true
end

-- Takes the outcomes of the threads that finished into out.
function batch:reap(out)
  for slot, th in pairs(self.threads) do
    -- lua-nginx-module's coroutine.status says "zombie" for a light
    -- thread that ended and was not waited for yet
    local status = co_status(th)
    if status == "zombie" or status == "dead" then
      local ran, s, ok, res, rid = ngx.thread.wait(th)
      self.threads[slot] = nil
      self.count = self.count - 1
      if not ran or s ~= slot then   -- cannot happen (one() catches), but never lose a slot
        ok, res = false, core.error{ kind = "transport", code = "transport.other", retryable = false,
                                     message = "the request's light thread failed: " .. tostring(s) }
      end
      if ok then
        out[#out + 1] = { slot = slot, ok = true, result = res, request_id = rid }
      else
        out[#out + 1] = { slot = slot, ok = false, error = res }
      end
    end
  end
  return out
end

-- wait(seconds) -> the finished ones: { slot =, ok = true, result = } or
-- { slot =, ok = false, error = }; possibly empty (the time ran out).
function batch:wait(seconds)
  local out = self:reap({})
  if out[1] or self.count == 0 or seconds <= 0 then return out end
  self.sema:wait(seconds)
  return self:reap(out)
end

function batch:active()
  return self.count
end

-- Ends the requests still running (none when the batch ran to its end).
function batch:close()
  for slot, th in pairs(self.threads) do
    ngx.thread.kill(th)
    self.threads[slot] = nil
  end
  self.count = 0
end

-- batch_open(client, n, secret) -> the batch transport (see client:batch_open)
function _M.batch_open(client, n, secret)
  local sema = require("ngx.semaphore").new(0)
  return setmetatable({ client = client, n = n, secret = secret, threads = {}, count = 0, sema = sema },
                      batch)
end


return _M
