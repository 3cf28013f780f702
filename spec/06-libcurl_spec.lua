-- How the core gets libcurl (src/dt_curl.h): opened by the core itself at
-- require time with lazy binding, not linked, so that Lua's RTLD_NOW does
-- not bind every symbol of libcurl's ~30 libraries; and a clear error from
-- require when the library cannot be opened. Each case runs a fresh
-- interpreter, the same one as the suite.
local shell = require "spec.helpers.shell"

local LUA, q, sh = shell.LUA, shell.q, shell.sh

-- run(cpath, code [, env]) -> exit status, output (stdout and stderr)
local function run(cpath, code, env)
  return sh(table.concat({ env or "", shell.lua_env("./lua/?.lua;;", cpath .. ";;"),
                           LUA, "-e", q(code) }, " "))
end

local CPATH = package.cpath:match("^[^;]+")   -- ./build/<lua>/?.so, from tools/test

describe("libcurl, opened by the core", function()
  it("is not linked into core.so", function()
    local so = CPATH:gsub("%?", "dingtalk/core")
    local _, out = sh("ldd " .. q(so))
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
      .. "src/*.c "
      .. "-o " .. q(dir .. "/dingtalk/core.so") .. " -ldl -lpthread"
    local rc, out = sh(cc)
    assert.are.equal(0, rc, out)
    assert.are.equal("", out)
    -- the core itself, then the module as a user requires it (a fresh
    -- interpreter each: 5.1 remembers a failed require as a loop)
    for _, mod in ipairs{ "dingtalk.core", "dingtalk" } do
      local status, res = run(dir .. "/?.so", "print(pcall(require, '" .. mod .. "'))")
      assert.are.equal(0, status, res)
      assert.matches("^false\t[^\n]*dingtalk%.core: cannot open libcurl: "
                     .. "libdingtalk%-absent%.so%.0: cannot open shared object file", res)
      if mod == "dingtalk" then
        -- not the "build it" hint: the core is built, libcurl is what is missing
        assert.matches("\nInstall libcurl 4 %(Debian: apt install libcurl4%)%.", res)
        assert.is_nil(res:find("make build", 1, true), res)
      end
    end
  end)
end)
