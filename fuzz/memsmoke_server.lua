-- A canned HTTP/1.1 server for fuzz/memsmoke.lua, run as a child process
-- (so memcheck, run with --trace-children=no, sees only the client).
-- usage: lua5.4 fuzz/memsmoke_server.lua
-- Prints "port N" on stdout once listening on 127.0.0.1, then answers by
-- the last path segment of the request (see CASES) until it gets /quit or
-- has been idle for 60 s. One request per connection.
local socket = require "socket"

local RID = "5A2E1F7C-0B6D-4C1E-9F3A-1B2C3D4E5F60"
local big = '{"result":true,"pad":"' .. string.rep("x", 200 * 1024) .. '"}'

-- name -> status, extra header lines, body
local CASES = {
  ok = { 200, "", '{"result":true}' },
  ["false"] = { 200, "", '{"result":false}' },
  scalar = { 200, "", "1" },
  empty = { 200, "", "" },
  api = { 400, "x-acs-request-id: " .. RID .. "\r\n",
          '{"code":"invalidRequest.robotNotExist","message":"The bot does not exist","requestid":"' .. RID .. '"}' },
  secret = { 401, "X-Acs-Trace-Id: trace\1\2\r\n",
             '{"Code":"InvalidAuthentication","Message":"token memsmoke-token-0123456789 is bad\r\n\255"}' },
  qps = { 403, "Retry-After: 3\r\n", '{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"slow down"}' },
  denied = { 403, "", '{"code":"Forbidden.AccessDenied.AccessTokenPermissionDenied","message":"scope",'
             .. '"accessdenieddetail":{"requiredScopes":["qyapi_robot_sendmsg"]}}' },
  html = { 502, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
           "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>" },
  redirect = { 302, "Location: http://127.0.0.1:1/elsewhere\r\n", "" },
  big = { 200, "", big },
  continue = { 200, "", '{"result":true}', "HTTP/1.1 100 Continue\r\nx-acs-request-id: early\r\n\r\n" },
}

local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
io.stdout:write("port ", port, "\n")
io.stdout:flush()
srv:settimeout(60)

while true do
  local c = srv:accept()
  if not c then break end                     -- idle too long
  c:settimeout(30)
  local line = c:receive("*l")
  local len = 0
  while true do
    local h = c:receive("*l")
    if not h or h == "" then break end
    local n = h:lower():match("^content%-length:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  if len > 0 then c:receive(len) end
  local name = line and line:match("^%u+ %S*/([%w_]+) HTTP") or "ok"
  if name == "quit" then
    c:send("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    c:close()
    break
  end
  local case = CASES[name] or CASES.ok
  c:send((case[4] or "") .. "HTTP/1.1 " .. case[1] .. " X\r\nContent-Type: application/json\r\n"
         .. case[2] .. "Content-Length: " .. #case[3] .. "\r\nConnection: close\r\n\r\n" .. case[3])
  c:close()
end
srv:close()
