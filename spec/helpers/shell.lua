-- Running processes from specs: shell quoting, a command's exit status and
-- output, and the environment for a child interpreter that must see this
-- checkout's Lua and C modules and nothing from the caller's LUA_* setup.
local _M = {}

-- The interpreter running the suite, by the name tools/test gives it.
_M.LUA = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

-- s as one single-quoted shell word
function _M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local q = _M.q

-- sh(cmd) -> exit status, stdout and stderr together
function _M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"", "r")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), (out:gsub("rc=%d+%s*$", ""))
end

-- "env ..." that drops the versioned LUA_PATH_5_x/LUA_CPATH_5_x (they
-- would win over LUA_PATH/LUA_CPATH) and the names in `unset`, then sets
-- LUA_PATH and LUA_CPATH; a command follows it.
-- the whole output of a shell command (stdout only)
function _M.capture(cmd)
  local p = io.popen(cmd, "r")
  local s = p:read("*a") or ""
  p:close()
  return s
end

-- a file's bytes, or nil when it cannot be read
function _M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function _M.lua_env(path, cpath, unset)
  local parts = { "env" }
  for _, v in ipairs{ "5_1", "5_2", "5_3", "5_4" } do
    parts[#parts + 1] = "-u LUA_PATH_" .. v .. " -u LUA_CPATH_" .. v
  end
  for _, name in ipairs(unset or {}) do parts[#parts + 1] = "-u " .. name end
  parts[#parts + 1] = "LUA_PATH=" .. q(path)
  parts[#parts + 1] = "LUA_CPATH=" .. q(cpath)
  return table.concat(parts, " ")
end

return _M
