-- dingtalk: a DingTalk Open API client with a C core (libcurl).
--
--   local dingtalk = require "dingtalk"
--   dingtalk.robot.clear_plugins{ robotCode = "ding...", token = "..." }
--   local c = dingtalk.new{ endpoint = "https://api.dingtalk.com" }
--   c.robot.clear_plugins{ robotCode = "ding...", token = "..." }
local client = require "dingtalk.client"
local core = require "dingtalk.core"

local setmetatable = setmetatable

local _M = { _VERSION = client._VERSION }

_M.new = client.new
_M.is_error = core.is_error
_M.token_cache = require "dingtalk.token_cache"   -- shared token caches for fleets


-- The module-level client is made on first use: require alone opens
-- nothing, and configure() can still choose its options.
local default

function _M.configure(opts)
  local c = client.new(opts)
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
