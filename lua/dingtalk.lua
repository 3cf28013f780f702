-- dingtalk: a DingTalk Open API client with a C core (libcurl).
--
--   local dingtalk = require "dingtalk"
--   dingtalk.robot.clear_plugins{ robotCode = "ding...", token = "..." }
--   local c = dingtalk.new{ endpoint = "https://api.dingtalk.com" }
--   c.robot.clear_plugins{ robotCode = "ding...", token = "..." }

-- The C core first, with a message a newcomer can act on: which
-- interpreter, how to build for it and where Lua looked (the loader's own
-- message kept whole). "undefined symbol: lua_newuserdatauv" and the like
-- mean a core built for another Lua.
local function core_missing(why)
  local jit = rawget(_G, "jit")
  local version = _VERSION or "Lua"
  local lua = jit and "luajit" or ("lua" .. (version:match("%d+%.%d+") or ""))
  local rock = jit and "luarocks --lua-version=5.1 make LUA=/usr/bin/luajit LUA_INCDIR=/usr/include/luajit-2.1"
    or ("luarocks --lua-version=" .. lua:sub(4) .. " make")
  why = tostring(why)
  -- the core was found and loaded but libcurl was not: building is no cure
  if why:find("cannot open libcurl", 1, true) then
    return why .. "\nInstall libcurl 4 (Debian: apt install libcurl4)."
  end
  local other = why:find("undefined symbol", 1, true)
    and " (the core found was built for another Lua version)" or ""
  return "dingtalk: the C core (dingtalk.core) cannot be loaded into "
    .. (jit and tostring(jit.version) or version) .. other .. ".\n"
    .. "Build it for this interpreter, from the dingtalk checkout: `make build LUA=" .. lua
    .. "` (then add ./build/" .. lua .. "/?.so to package.cpath or LUA_CPATH), or `" .. rock .. "`.\n"
    .. "package.cpath: " .. tostring(package.cpath) .. "\n"
    .. "The loader said: " .. why
end

local core do
  local ok, c = pcall(require, "dingtalk.core")
  if not ok then error(core_missing(c), 0) end
  core = c
end
local client = require "dingtalk.client"

local setmetatable = setmetatable

local _M = { _VERSION = client._VERSION }

function _M.new(opts) return client.new(opts, "dingtalk.new") end
_M.is_error = core.is_error
_M.token_cache = require "dingtalk.token_cache"   -- shared token caches for fleets


-- The module-level client is made on first use: require alone opens
-- nothing, and configure() can still choose its options.
local default

function _M.configure(opts)
  local c = client.new(opts, "dingtalk.configure")
  if default then default:close() end
  default = c
  return c
end

local function get_default()
  if not default then default = client.new() end
  return default
end

_M.robot = setmetatable({}, {
  __index = function(_, name) return get_default().robot[name] end,
})


return _M
