-- bench/capture.lua: a one-shot HTTP server (LuaSocket) that records the raw
-- bytes of the requests it gets, so bench/run can check that the floor and
-- the module send identical requests.
--   lua5.4 bench/capture.lua PORT OUTPREFIX COUNT
-- Serves COUNT connections, one request each; request k goes to OUTPREFIX.k.
-- Writes OUTPREFIX.ready once listening.
local socket = require "socket"
local port, prefix, count = tonumber(arg[1]), arg[2], tonumber(arg[3] or 1)
local srv = assert(socket.bind("127.0.0.1", port))
srv:settimeout(20)
local f = assert(io.open(prefix .. ".ready", "w")); f:close()
for k = 1, count do
  local c = assert(srv:accept())
  c:settimeout(5)
  local head, len = {}, 0
  while true do
    local line = assert(c:receive("*l"))
    head[#head + 1] = line .. "\r\n"
    if line == "" then break end
    local n = line:lower():match("^content%-length:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  local body = len > 0 and assert(c:receive(len)) or ""
  f = assert(io.open(prefix .. "." .. k, "wb"))
  f:write(table.concat(head), body)
  f:close()
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
         .. "Connection: close\r\n\r\n{\"result\":true}")
  c:close()
end
srv:close()
