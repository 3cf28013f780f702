-- The process around the core: fork() after use (spec/c/fork.c), proxies
-- from the environment, the system CA store. Each runs in a child process,
-- so that the environment, the mounts and the forks stay there.
local socket = require "socket"
local emulator = require "spec.helpers.emulator"
local shell = require "spec.helpers.shell"

local LUA, q, sh = shell.LUA, shell.q, shell.sh
local TOKEN = "tok-process-spec-0123456789"

-- LUA file args..., with this checkout's modules and no proxy exceptions;
-- env: "NAME=value ..."
local function lua_cmd(env, file, ...)
  local parts = { shell.lua_env("./lua/?.lua;" .. package.path, package.cpath, { "no_proxy", "NO_PROXY" }),
                  env or "", LUA, q(file) }
  for _, a in ipairs{ ... } do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

-- One call through the core, printed as "<name> ok <result>" or
-- "<name> err <code>"; `opts` as a Lua table constructor.
local CALL = [[
local core = require "dingtalk.core"
local name, url, opts, token = ...
local c = assert(core.new_client(assert((loadstring or load)("return " .. opts))()))
local ok, r = core.post(c, url .. "/v1.0/robot/plugins/clear", token,
                        '{"robotCode":"dingbot-ok"}', "result")
print(name .. (ok and (" ok " .. tostring(r)) or (" err " .. r.code)))
]]

describe("the process around the core", function()
  local emu, CALL_FILE
  setup(function()
    emu = emulator.start()
    CALL_FILE = os.tmpname()
    local f = assert(io.open(CALL_FILE, "w"))
    f:write(CALL)
    f:close()
  end)
  teardown(function()
    if emu then emulator.stop(emu) end
    if CALL_FILE then os.remove(CALL_FILE) end
  end)
  before_each(function() emulator.reset(emu) end)

  it("fork(): parent and child each get their own answers, the child on new connections", function()
    local exe = "build/spec-fork-" .. shell.LUA   -- the suite may run under two interpreters at once
    local rc, out = sh("mkdir -p build && cc -std=c99 -Wall -Wextra -Werror -O1 $(pkg-config --cflags lua5.4) "
      .. "spec/c/fork.c -o " .. exe .. " $(pkg-config --libs lua5.4) -ldl -lm")
    assert.are.equal(0, rc, out)
    local calls = 40
    rc, out = sh(table.concat({ exe, emu.url, emu.tls_url, emu.cafile,
      q("./build/lua5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"), q("./lua/?.lua"), calls }, " "))
    assert.are.equal(0, rc, out)
    assert.matches("ok child " .. calls, out)
    assert.matches("fork ok", out)
    -- per port: the parent's requests on one connection, the child's on one other
    local seen = {}
    for _, r in ipairs(emulator.requests(emu)) do
      local who = r.headers["x-acs-dingtalk-access-token"]:match("^tok%-fork%-(%a+)$")
      local key = r.headers.host .. " " .. who
      seen[key] = seen[key] or { n = 0, conns = {} }
      seen[key].n = seen[key].n + 1
      seen[key].conns[r.connection] = true
      seen[key].last = r
    end
    for _, port in ipairs{ emu.port, emu.tls_port } do
      local host = "127.0.0.1:" .. port
      local parent, child = seen[host .. " parent"], seen[host .. " child"]
      -- two requests a round: 1 before the forks, 1 after the closing child,
      -- `calls` beside the busy child, 1 after it
      assert.are.equal(2 * (calls + 3), parent.n, host)
      assert.are.equal(2 * calls, child.n, host)
      local pc, cc = next(parent.conns), next(child.conns)
      assert.is_nil(next(parent.conns, pc), host .. ": the parent changed connections")
      assert.is_nil(next(child.conns, cc), host .. ": the child changed connections")
      assert.are_not.equal(pc, cc, host .. ": parent and child shared a connection")
      assert.are.equal(2 * (calls + 3), parent.last.connection_requests, host)
    end
  end)

  -- A proxy that records the request line of every connection and answers 403.
  local function with_proxy(run)
    local server = assert(socket.bind("127.0.0.1", 0))
    local _, port = server:getsockname()
    local proxy = "http://127.0.0.1:" .. port
    local child = io.popen(run(proxy) .. " 2>&1", "r")
    local got, deadline = {}, socket.gettime() + 10
    server:settimeout(0.1)
    -- until the https call (the last one) reached the proxy
    while socket.gettime() < deadline and not (got[#got] or ""):find("^CONNECT") do
      local conn = server:accept()
      if conn then
        conn:settimeout(2)
        local line = conn:receive("*l")
        repeat local h = conn:receive("*l") until not h or h == ""
        got[#got + 1] = line
        conn:send("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn:close()
      end
    end
    server:close()
    local out = child:read("*a")
    child:close()
    return got, out
  end

  for _, direct in ipairs{ true, false } do
    it("direct = " .. tostring(direct) .. ": environment proxies "
       .. (direct and "are not used for plain http" or "apply"), function()
      local got, out = with_proxy(function(proxy)
        local env = "http_proxy=" .. proxy .. " HTTP_PROXY=" .. proxy .. " ALL_PROXY=" .. proxy
          .. " all_proxy=" .. proxy .. " https_proxy=" .. proxy
        local opts = "{ timeout = 3000" .. (direct and ", direct = true" or "") .. " }"
        return lua_cmd(env, CALL_FILE, "http", emu.url, opts, TOKEN) .. " && "
          .. lua_cmd(env, CALL_FILE, "https", emu.tls_url, "{ timeout = 3000, cafile = " .. ("%q"):format(emu.cafile)
                     .. " }", TOKEN)
      end)
      local reqs = emulator.requests(emu)
      if direct then
        assert.matches("http ok true", out)
        assert.are.equal(1, #reqs)                      -- straight to the endpoint
        assert.are.equal(TOKEN, reqs[1].headers["x-acs-dingtalk-access-token"])
        assert.are.same({ "CONNECT 127.0.0.1:" .. emu.tls_port .. " HTTP/1.1" }, got)
      else
        assert.matches("http err http.403", out)       -- the proxy's answer
        assert.are.equal(0, #reqs)
        assert.are.same({ "POST " .. emu.url .. "/v1.0/robot/plugins/clear HTTP/1.1",
                          "CONNECT 127.0.0.1:" .. emu.tls_port .. " HTTP/1.1" }, got)
      end
      -- https goes through the proxy in both cases (which refused the tunnel)
      assert.matches("https err transport%.", out)
    end)
  end

  -- The "system" CA store is whatever this private mount namespace has at
  -- /etc/ssl/certs: the emulator's CA as the bundle file only (as on systems
  -- without a hashed directory), or nothing at all.
  local function with_store(store, cafile)
    local setup = "mount -t tmpfs none /etc/ssl/certs"
    if store == "bundle" then
      setup = setup .. " && cp " .. q(emu.cafile) .. " /etc/ssl/certs/ca-certificates.crt"
    elseif store == "dir" then   -- Debian's layout: the CAs under hashed names too
      setup = setup .. " && cp " .. q(emu.cafile) .. " /etc/ssl/certs/emulator.pem"
        .. " && openssl rehash /etc/ssl/certs"
    end
    local opts = "{ timeout = 3000" .. (cafile and (", cafile = " .. ("%q"):format(cafile)) or "") .. " }"
    local rc, out = sh("unshare -m sh -c " .. q(setup .. " && " .. lua_cmd(nil, CALL_FILE, "call", emu.tls_url, opts,
                                                                               TOKEN)))
    return rc, out
  end

  local unshare = sh("unshare -m true") == 0
  local pending_or_it = unshare and it or pending
  pending_or_it("cafile adds to the system CA store (private mount namespace)", function()
    local rc, out = with_store("bundle", emu.other_cafile)     -- not the emulator's CA
    assert.are.equal(0, rc, out)
    assert.matches("call ok true", out)
    -- and the check is real: neither store nor cafile knows the emulator's CA
    rc, out = with_store("empty", emu.other_cafile)
    assert.are.equal(0, rc, out)
    assert.matches("call err transport.tls", out)
    rc, out = with_store("empty", emu.cafile)
    assert.are.equal(0, rc, out)
    assert.matches("call ok true", out)
    -- a system store kept as a hashed CA directory (no bundle): the cafile
    -- is set alone and the directory still counts
    rc, out = with_store("dir", emu.other_cafile)
    assert.are.equal(0, rc, out)
    assert.matches("call ok true", out)
    assert.are.equal(3, #emulator.requests(emu))
  end)
end)
