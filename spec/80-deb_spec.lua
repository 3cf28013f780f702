-- The Debian package: `make deb` (debian/, dh-lua) builds lua-dingtalk with
-- the module for every Lua Debian has and /usr/bin/dingtalk on Lua 5.4,
-- outside the checkout's tracked files. The contents are read from the .deb
-- itself (dpkg-deb); `make check-deb` installs it and calls the emulator.
-- #once (tools/test: under the first interpreter only): `make deb` takes ~40 s
-- the first time, and two runs at once would build in the same place.
local shell = require "spec.helpers.shell"

local q, sh = shell.q, shell.sh
local VERSIONS = { "5.1", "5.2", "5.3", "5.4" }

local function must(cmd)
  local rc, out = sh("{ " .. cmd .. "\n}")
  assert(rc == 0, cmd .. "\n" .. out)
  return out
end

local function set(s, sep)
  local t = {}
  for item in s:gmatch("[^" .. sep .. "]+") do t[(item:gsub("^%s+", ""):gsub("%s+$", ""))] = true end
  return t
end

describe("the Debian package #once", function()
  local deb, multiarch, tmp, files, links
  setup(function()
    local before = must("git status --porcelain --ignored | grep -v '^!! build/$' || true")
    must("make --no-print-directory deb")
    -- the checkout is as it was: dh-lua wrote in build/deb's copy
    assert.are.equal(before, must("git status --porcelain --ignored | grep -v '^!! build/$' || true"))
    multiarch = must("dpkg-architecture -qDEB_HOST_MULTIARCH"):gsub("%s+$", "")
    deb = must("ls build/deb/lua-dingtalk_*_$(dpkg --print-architecture).deb"):gsub("%s+$", "")
    tmp = must("mktemp -d"):gsub("%s+$", "")
    must("dpkg-deb -x " .. q(deb) .. " " .. q(tmp))
    files, links = {}, {}
    for line in must("dpkg-deb --contents " .. q(deb)):gmatch("[^\n]+") do
      local mode, path, target = line:match("^(%S+)%s+%S+%s+%S+%s+%S+%s+%S+%s+%.(/%S*)%s*%-?>?%s*(%S*)")
      files[path] = mode
      if target ~= "" then links[path] = target end
    end
  end)
  teardown(function()
    if tmp then sh("rm -rf " .. q(tmp)) end
  end)

  it("is build/deb/lua-dingtalk_<version>_<arch>.deb, nothing at the top of the checkout", function()
    assert.matches("^build/deb/lua%-dingtalk_0%.1%.0_[%w]+%.deb$", deb)
    assert.are.equal("", must("ls *.deb *.changes *.buildinfo 2>/dev/null || true"))
  end)

  it("holds the core and every Lua file of lua/ for Lua 5.1, 5.2, 5.3 and 5.4", function()
    local lua_files = {}
    for f in must("cd lua && find . -name '*.lua' | LC_ALL=C sort"):gmatch("[^\n]+") do
      lua_files[#lua_files + 1] = f:sub(3)
    end
    assert.is_true(#lua_files >= 10)
    for _, v in ipairs(VERSIONS) do
      local core = "/usr/lib/" .. multiarch .. "/lua/" .. v .. "/dingtalk/core.so"
      assert.is_truthy(files[core], core)
      -- a link to the libtool library of that version, which the package holds
      local lib = "/usr/lib/" .. multiarch .. "/liblua" .. v .. "-dingtalk.so.0.0.0"
      assert.are.equal("../../../liblua" .. v .. "-dingtalk.so.0.0.0", links[core])
      assert.matches("^%-", files[lib], 1)
      for _, f in ipairs(lua_files) do
        local path = "/usr/share/lua/" .. v .. "/" .. f
        assert.is_truthy(files[path], path)
        -- the checkout's text, byte for byte (5.2-5.4 link to 5.1's copy)
        assert.are.equal(must("cat lua/" .. q(f)), must("cat " .. q(tmp .. path)))
      end
    end
    -- LuaJIT loads the 5.1 build, as it does lua-cjson's
    assert.matches("/usr/lib/" .. multiarch .. "/lua/5.1/?.so", must("luajit -e 'print(package.cpath)'"), 1, true)
  end)

  it("each core exports luaopen_dingtalk_core only and links no libcurl (it opens libcurl.so.4 itself)", function()
    for _, v in ipairs(VERSIONS) do
      local lib = tmp .. "/usr/lib/" .. multiarch .. "/liblua" .. v .. "-dingtalk.so.0.0.0"
      assert.are.equal("luaopen_dingtalk_core\n",
        must("nm -D --defined-only " .. q(lib) .. " | awk '$2 ~ /^[TDB]$/ { print $3 }'"))
      assert.is_nil(must("readelf -d " .. q(lib)):match("NEEDED[^\n]*curl"))
    end
    assert.matches('"libcurl.so.4"', must("cat src/dt_curl.h"), 1, true)
  end)

  it("installs /usr/bin/dingtalk bound to /usr/bin/lua5.4, without luarocks.loader", function()
    assert.are.equal("-rwxr-xr-x", files["/usr/bin/dingtalk"])
    local cmd = tmp .. "/usr/bin/dingtalk"
    assert.are.equal("#!/usr/bin/lua5.4", must("head -n 1 " .. q(cmd)):gsub("\n$", ""))
    -- the rest is bin/dingtalk's
    assert.are.equal(must("tail -n +2 bin/dingtalk"), must("tail -n +2 " .. q(cmd)))
    -- run from the extracted tree, a luarocks.loader first on the path would
    -- leave a mark if the command loaded it
    local fake, mark = tmp .. "/fake", tmp .. "/loader-was-loaded"
    must("mkdir -p " .. q(fake .. "/luarocks") .. " && printf '%s\\n' "
      .. q("io.open(" .. string.format("%q", mark) .. ", 'w'):close() return {}") .. " >"
      .. q(fake .. "/luarocks/loader.lua"))
    local out = must("cd / && env -u LUA_INIT -u LUA_INIT_5_4 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH="
      .. q(fake .. "/?.lua;" .. tmp .. "/usr/share/lua/5.4/?.lua;;") .. " LUA_CPATH="
      .. q(tmp .. "/usr/lib/" .. multiarch .. "/lua/5.4/?.so;;") .. " lua5.4 " .. q(cmd) .. " --help")
    assert.matches("Usage: dingtalk robot COMMAND", out, 1, true)
    assert.is_nil(io.open(mark), "/usr/bin/dingtalk loaded luarocks.loader")
    assert.is_truthy(files["/usr/share/man/man1/dingtalk.1.gz"])
  end)

  it("depends on libcurl4 (opened at run time), lua-cjson and lua5.4, and provides lua5.x-dingtalk", function()
    local depends = {}
    for dep in pairs(set(must("dpkg-deb --field " .. q(deb) .. " Depends"), ",")) do
      depends[dep:match("^[%w%.%-+]+")] = true
    end
    for _, name in ipairs{ "libcurl4", "lua-cjson", "lua5.4", "libc6" } do
      assert.is_true(depends[name], name .. " not in Depends")
    end
    local provides = set(must("dpkg-deb --field " .. q(deb) .. " Provides"), ",")
    for _, v in ipairs(VERSIONS) do assert.is_true(provides["lua" .. v .. "-dingtalk"], v) end
    assert.are.equal("lua-dingtalk\n", must("dpkg-deb --field " .. q(deb) .. " Package"))
  end)
end)
