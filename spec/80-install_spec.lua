-- Installing from a checkout: `luarocks make` builds where nothing can
-- shadow another interpreter's build, `make install PREFIX=...` writes the
-- command bound to its interpreter without luarocks.loader, a user without
-- root installs with `make install PREFIX=$HOME/.local`, `luarocks --local`
-- or `--tree`, and `make clean` leaves nothing behind. Each runs in a copy of
-- the checkout. #once: it tests the build and LuaRocks, not the interpreter
-- running busted.
local shell = require "spec.helpers.shell"

local q, sh = shell.q, shell.sh
local NOBODY = 65534

-- the command with neither the caller's Lua paths nor LUA_INIT
local CLEAN_ENV = "env -u LUA_INIT -u LUA_PATH -u LUA_CPATH -u LUA_INIT_5_4 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
  .. "-u LUA_INIT_5_3 -u LUA_PATH_5_3 -u LUA_CPATH_5_3 -u LUA_INIT_5_2 -u LUA_PATH_5_2 -u LUA_CPATH_5_2 "

local function must(cmd)
  local rc, out = sh("{ " .. cmd .. "\n}")
  assert(rc == 0, cmd .. "\n" .. out)
  return out
end

local function first_line(path)
  local f = assert(io.open(path))
  local l = f:read("*l")
  f:close()
  return l
end

-- a copy of this checkout as git sees it (tracked, and untracked but not
-- ignored: the work in progress), made a repository of its own for
-- `git status --ignored`
local function copy_checkout(dir)
  must("mkdir -p " .. q(dir) .. " && git ls-files -z --cached --others --exclude-standard"
    .. " | xargs -0 sh -c 'for f; do [ -e \"$f\" ] && printf \"%s\\n\" \"$f\"; done' sh"
    .. " | tar -cf - -T - | tar -xf - -C " .. q(dir))
  must("cd " .. q(dir) .. " && git init -q && git add -A"
    .. " && git -c user.name=spec -c user.email=spec@localhost commit -qm copy")
  return dir
end

-- `git status --porcelain --ignored` of the copy, one entry a line
local function status(dir)
  return must("cd " .. q(dir) .. " && git status --porcelain --ignored")
end

describe("installing from a checkout #once", function()
  local tmp, copy
  setup(function()
    tmp = must("mktemp -d"):gsub("%s+$", "")
    must("chmod 755 " .. q(tmp))
    copy = copy_checkout(tmp .. "/copy")
  end)
  teardown(function()
    if tmp then sh("rm -rf " .. q(tmp)) end
  end)

  it("`luarocks make` as the README prints it leaves no build in the checkout (none for ./?.so to find)", function()
    assert.are.equal("", status(copy))
    local tree = tmp .. "/tree"
    must("cd " .. q(copy) .. " && LUAROCKS_CONFIG=tools/luarocks-config.lua luarocks --lua-version=5.4 make --tree="
      .. q(tree) .. " >/dev/null")
    -- the build stays in build/ (git-ignored, on no module path)
    assert.are.equal("!! build/\n", status(copy))
    assert.are.equal("", must("cd " .. q(copy) .. " && find . -path ./build -prune -o -path ./.git -prune -o "
      .. "\\( -name '*.so' -o -name '*.o' \\) -print"))
    -- from the copy, with ./?.so first on the path, another Lua finds no core
    local rc, out = sh("cd " .. q(copy) .. " && " .. CLEAN_ENV
      .. "LUA_CPATH='./?.so' lua5.3 -e 'require \"dingtalk.core\"'")
    assert.are_not.equal(0, rc)
    assert.matches("module 'dingtalk.core' not found", out, 1, true)
    -- and the installed copy is a working one
    out = must(CLEAN_ENV .. "LUA_PATH=" .. q(tree .. "/share/lua/5.4/?.lua;;") .. " LUA_CPATH="
      .. q(tree .. "/lib/lua/5.4/?.so;;") .. " lua5.4 -e 'local d = require \"dingtalk\"; "
      .. "print(d._VERSION, package.loaded[\"dingtalk.core\"] ~= nil)'")
    assert.are.equal("0.1.0\ttrue\n", out)
  end)

  it("`make install PREFIX=...` binds the command to its interpreter and loads no luarocks.loader", function()
    -- a luarocks.loader that leaves a mark: LuaRocks' wrapper would load it
    -- (through LUA_PATH, before the real one)
    local fake, mark = tmp .. "/fake", tmp .. "/loader-was-loaded"
    must("mkdir -p " .. q(fake .. "/luarocks"))
    local f = assert(io.open(fake .. "/luarocks/loader.lua", "w"))
    f:write("io.open(" .. string.format("%q", mark) .. ", 'w'):close()\nreturn { add_context = function() end }\n")
    f:close()
    for _, case in ipairs{ { lua = "lua5.4", interp = "/usr/bin/lua5.4", version = "Lua 5.4" },
                           { lua = "luajit", interp = "/usr/bin/luajit", version = "Lua 5.1 jit" } } do
      local prefix = tmp .. "/prefix-" .. case.lua
      must("cd " .. q(copy) .. " && make --no-print-directory install LUA=" .. case.lua .. " PREFIX=" .. q(prefix))
      local cmd = prefix .. "/bin/dingtalk"
      assert.are.equal("#!" .. case.interp, first_line(cmd))
      os.remove(mark)
      -- from /, with the interpreter named by LUA_INIT: the tree's modules,
      -- not the copy's lua/
      local out = must("cd / && " .. CLEAN_ENV .. "LUA_PATH=" .. q(fake .. "/?.lua;;")
        .. " LUA_INIT='io.stderr:write(\"interp=\", _VERSION, rawget(_G, \"jit\") and \" jit\" or \"\", \"\\n\")' "
        .. q(cmd) .. " --help")
      assert.matches("interp=" .. case.version .. "\n", out, 1, true)
      assert.matches("Usage: dingtalk robot COMMAND", out, 1, true)
      assert.is_nil(io.open(mark), case.lua .. ": the installed command loaded luarocks.loader")
    end
    assert.are.equal("!! build/\n", status(copy))
  end)

  local as_root = sh("test \"$(id -u)\" = 0 && command -v setpriv") == 0
  local it_as_root = as_root and it or pending
  it_as_root("as a user (not root): make install PREFIX=$HOME/.local, luarocks --local make, --tree DIR", function()
    local home, ucopy = tmp .. "/home", copy_checkout(tmp .. "/user-copy")
    must("mkdir -p " .. q(home) .. " && chown -R " .. NOBODY .. ":" .. NOBODY .. " " .. q(home) .. " " .. q(ucopy))
    -- the README's lines, as user 65534 (nobody), who cannot write /usr/local
    local function as_user(cmd)
      return sh("cd " .. q(ucopy) .. " && setpriv --reuid=" .. NOBODY .. " --regid=" .. NOBODY .. " --clear-groups "
        .. CLEAN_ENV .. "HOME=" .. q(home) .. " sh -c " .. q(cmd) .. " 2>&1")
    end
    assert.are_not.equal(0, (as_user("test -w /usr/local/lib")), "user " .. NOBODY .. " can write /usr/local")

    local rc, out = as_user("make --no-print-directory install PREFIX=$HOME/.local"
      .. " && cd / && $HOME/.local/bin/dingtalk --help")
    assert.are.equal(0, rc, out)
    assert.matches("Usage: dingtalk robot COMMAND", out, 1, true)
    assert.are.equal("#!/usr/bin/lua5.4", first_line(home .. "/.local/bin/dingtalk"))

    rc, out = as_user("LUAROCKS_CONFIG=tools/luarocks-config.lua luarocks --lua-version=5.4 --local make >/dev/null"
      .. " && eval \"$(luarocks --lua-version=5.4 --local path)\" && cd / && lua5.4 -e "
      .. "'local d = require \"dingtalk\"; "
      .. "print(\"local\", d._VERSION, package.searchpath(\"dingtalk.core\", package.cpath))'")
    assert.are.equal(0, rc, out)
    assert.matches("local\t0.1.0\t" .. home .. "/.luarocks/lib/lua/5.4/dingtalk/core.so", out, 1, true)

    rc, out = as_user("LUAROCKS_CONFIG=tools/luarocks-config.lua luarocks --lua-version=5.4 --tree=$HOME/rocks make"
      .. " >/dev/null && eval \"$(luarocks --lua-version=5.4 --tree=$HOME/rocks path)\" && cd / && lua5.4 -e "
      .. "'local d = require \"dingtalk\"; "
      .. "print(\"tree\", d._VERSION, package.searchpath(\"dingtalk.core\", package.cpath))'"
      .. " && dingtalk --help >/dev/null && command -v dingtalk")
    assert.are.equal(0, rc, out)
    assert.matches("tree\t0.1.0\t" .. home .. "/rocks/lib/lua/5.4/dingtalk/core.so", out, 1, true)
    assert.matches(home .. "/rocks/bin/dingtalk", out, 1, true)
  end)

  it("`make clean` removes every build output: git status --ignored is clean", function()
    -- outputs of every kind the targets write
    must("cd " .. q(copy) .. " && make --no-print-directory build LUA=lua5.4 >/dev/null"
      .. " && LUAROCKS_CONFIG=tools/luarocks-config.lua luarocks --lua-version=5.4 make --tree=luarocks-tree/lua5.4"
      .. " >/dev/null && mkdir -p fuzz/out bench/out .tmp && touch fuzz/out/fuzz.log bench/out/latest.md .tmp/x")
    assert.are_not.equal("", status(copy))
    must("cd " .. q(copy) .. " && make --no-print-directory clean")
    assert.are.equal("", status(copy))
  end)
end)
