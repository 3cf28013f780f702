-- How the core gets libcurl (src/dt_curl.h): opened by the core itself at
-- require time with lazy binding, not linked, so that Lua's RTLD_NOW does
-- not bind every symbol of libcurl's ~30 libraries; and a clear error from
-- require when the library cannot be opened. Each case runs a fresh
-- interpreter, the same one as the suite.
local LUA = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- run(cpath, code [, env]) -> exit status, output (stdout and stderr)
local function run(cpath, code, env)
  local p = io.popen(table.concat({
    "env -u LUA_PATH_5_1 -u LUA_PATH_5_2 -u LUA_PATH_5_3 -u LUA_PATH_5_4",
    "-u LUA_CPATH_5_1 -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4",
    env or "", "LUA_PATH=" .. q("./lua/?.lua;;"), "LUA_CPATH=" .. q(cpath .. ";;"),
    LUA, "-e", q(code), "2>&1; echo rc=$?" }, " "))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out:gsub("rc=%d+%s*$", "")
end

local CPATH = package.cpath:match("^[^;]+")   -- ./build/<lua>/?.so, from tools/test

describe("libcurl, opened by the core", function()
  it("is not linked into core.so", function()
    local so = CPATH:gsub("%?", "dingtalk/core")
    local p = io.popen("ldd " .. q(so) .. " 2>&1")
    local out = p:read("*a")
    p:close()
    assert.matches("libc%.so", out)   -- ldd did read the file
    assert.not_matches("libcurl", out)
  end)

  it("is bound lazily: require and a client bind fewer symbols than under LD_BIND_NOW", function()
    -- The same require and client, with the dynamic linker's log of every
    -- symbol binding. Linked libcurl (Lua opens modules with RTLD_NOW)
    -- binds as many as LD_BIND_NOW=1 does; opened lazily it binds fewer.
    local code = "local core = require 'dingtalk.core'; "
      .. "local c = assert(core.new_client{ user_agent = 'spec' }); c:close(); print('ready')"
    local function bindings(env)
      local rc, out = run(CPATH, code, "LD_DEBUG=bindings " .. env)
      assert.are.equal(0, rc, out:sub(-300))
      assert.matches("ready", out)
      local n = 0
      for _ in out:gmatch("binding file [^\n]-libcurl") do n = n + 1 end
      local all = 0
      for _ in out:gmatch("binding file ") do all = all + 1 end
      return all, n
    end
    local lazy, lazy_curl = bindings("")
    local eager = bindings("LD_BIND_NOW=1")
    assert.is_true(lazy_curl > 0, "libcurl was not loaded at all")
    assert.is_true(lazy < eager * 0.9,
      ("%d bindings with lazy binding, %d under LD_BIND_NOW"):format(lazy, eager))
  end)

  it("missing: require fails with an error naming the library", function()
    local dir = "build/spec-nocurl/" .. LUA
    local cc = "mkdir -p " .. q(dir .. "/dingtalk") .. " && cc -std=c99 -Wall -Wextra -Werror -O1 -fPIC -shared "
      .. "-fvisibility=hidden $(pkg-config --cflags " .. LUA .. " libcurl) "
      .. "'-DDT_LIBCURL=\"libdingtalk-absent.so.0\"' "
      .. "src/dt_core.c src/dt_curl.c src/dt_http.c src/dt_map.c src/dt_error.c "
      .. "-o " .. q(dir .. "/dingtalk/core.so") .. " -ldl -lpthread 2>&1"
    local p = io.popen(cc)
    local out = p:read("*a")
    p:close()
    assert.are.equal("", out)
    -- the core itself, then the module as a user requires it (a fresh
    -- interpreter each: 5.1 remembers a failed require as a loop)
    for _, mod in ipairs{ "dingtalk.core", "dingtalk" } do
      local rc, res = run(dir .. "/?.so", "print(pcall(require, '" .. mod .. "'))")
      assert.are.equal(0, rc, res)
      assert.matches("^false\t[^\n]*dingtalk%.core: cannot open libcurl: "
                     .. "libdingtalk%-absent%.so%.0: cannot open shared object file", res)
    end
  end)
end)
