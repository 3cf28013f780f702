-- Token caches shared by a fleet: every process of it (nginx workers, hosts,
-- cron jobs, CLI runs) uses one access token per app, fetched once.
--
--   local dingtalk = require "dingtalk"
--   local c = dingtalk.new{ app_key = ..., app_secret = ...,
--                           token_cache = dingtalk.token_cache.shared_dict(ngx.shared.dingtalk) }
--
-- A cache is any object with these methods (the token manager calls them
-- with `:`, and protects every call: a raise, or nil + err, is a failure,
-- reported and never fatal):
--   cache:get(key) -> value | nil               (a string; nil when absent)
--   cache:set(key, value, ttl) -> truthy | nil, err      (ttl: whole seconds >= 1)
-- and optionally, so that one process fetches while the others wait:
--   cache:lock(key, ttl) -> true | false | nil, err
--       take `key` unless it is taken (atomically, for the whole fleet);
--       it frees itself after ttl seconds (a holder that died)
--   cache:unlock(key)      free the lock this object took
--   cache:delete(key)      remove an entry; called only by the lock's holder,
--                          after it checked that the entry is still the
--                          token the platform refused
-- The module does not speak any store's protocol: the adapters below wrap
-- the store's own client.
local check = require "dingtalk.check"
local core = require "dingtalk.core"

local error = error
local loadfile = loadfile
local package = package
local pcall = pcall
local tonumber = tonumber
local setmetatable = setmetatable
local tostring = tostring
local type = type
local math_random = math.random
local os_time = os.time
local fail = check.fail

local _M = {}


-- The key the token of app_key at endpoint is stored under (for operators:
-- `redis-cli ttl <key>`); endpoint as the client normalised it (no slash
-- at the end). The lock is the same key with ":lock".
function _M.key(endpoint, app_key, app_secret)
  -- dingtalk.token is loaded by clients with app credentials only
  return require("dingtalk.token").cache_key(endpoint, app_key, app_secret)
end


local function method(cache, name)
  local ok, f = pcall(function() return cache[name] end)
  return ok and f or nil
end

-- For dingtalk.new: the cache as given, once it has what it needs.
function _M.check(cache, app_key)
  if app_key == nil then
    fail("argument.option", "token_cache", "token_cache needs app credentials (app_key and app_secret)")
  end
  local t = type(cache)
  if (t ~= "table" and t ~= "userdata") or type(method(cache, "get")) ~= "function"
      or type(method(cache, "set")) ~= "function" then
    fail("argument.option", "token_cache", "token_cache must be an object with get and set methods")
  end
  local lock, unlock = method(cache, "lock"), method(cache, "unlock")
  if (lock ~= nil or unlock ~= nil) and (type(lock) ~= "function" or type(unlock) ~= "function") then
    fail("argument.option", "token_cache", "token_cache must have both lock and unlock, or neither")
  end
  local delete = method(cache, "delete")
  if delete ~= nil and type(delete) ~= "function" then
    fail("argument.option", "token_cache", "token_cache.delete must be a method")
  end
  return cache
end


-- A value to tell this lock holder from another one (a lock that freed
-- itself and was taken again must not be freed by its first holder).
local seq = 0
local function owner()
  seq = seq + 1
  return core.sha256(tostring(core.now()) .. "\0" .. tostring(os_time()) .. "\0" .. tostring(seq)
                     .. "\0" .. tostring({}) .. "\0" .. tostring(math_random())):sub(1, 24)
end


-------------------------------------------------------------------------------
-- nginx: all workers of one nginx share a lua_shared_dict. Its operations
-- are atomic across workers and never yield; `add` (set unless present,
-- with an expiry) is the lock.

local dict_mt = {}
dict_mt.__index = dict_mt

function dict_mt:get(key)
  local v, err = self.dict:get(key)
  if v == nil and err then return nil, err end
  return v
end

function dict_mt:set(key, value, ttl)
  local ok, err = self.dict:set(key, value, ttl)
  if not ok then return nil, err or "set failed" end
  return true
end

function dict_mt:lock(key, ttl)
  local me = owner()
  local ok, err = self.dict:add(key, me, ttl)
  if ok then
    self.held[key] = me
    return true
  end
  if err == "exists" then return false end
  return nil, err or "add failed"
end

function dict_mt:unlock(key)
  local me = self.held[key]
  self.held[key] = nil
  if me and self.dict:get(key) == me then self.dict:delete(key) end
  return true
end

function dict_mt:delete(key)
  self.dict:delete(key)
  return true
end

function _M.shared_dict(dict)
  if type(dict) ~= "table" and type(dict) ~= "userdata" then
    fail("argument.type", "dict", "shared_dict needs an ngx.shared.DICT (declare it with lua_shared_dict)")
  end
  return setmetatable({ dict = dict, held = {} }, dict_mt)
end


-------------------------------------------------------------------------------
-- Redis, through a client the caller chose: redis-lua (Debian's lua-redis,
-- plain Lua: raises on errors, nil for a missing key, true for OK) or
-- lua-resty-redis (OpenResty: nil, err on errors, ngx.null for a missing key,
-- "OK"). Commands used: GET, SETEX, SET key value NX EX ttl, DEL.
--
-- `client` is a connected client object, or a function that returns one
-- (or nil, err): the adapter then calls it for each operation and, after
-- it, hands the connection back with set_keepalive (lua-resty-redis: a
-- cosocket belongs to the request that made it, so it cannot be kept in a
-- module) or closes it with quit (redis-lua), so that a Redis that went
-- away and came back is found again.

local redis_mt = {}
redis_mt.__index = redis_mt

_M.REDIS_KEEPALIVE = 10000   -- ms a pooled lua-resty-redis connection idles at most
_M.REDIS_POOL = 16

local function is_nil(v)
  -- lua-resty-redis answers ngx.null (a light userdata) for a missing value
  return v == nil or type(v) == "userdata"
end

-- Runs f(conn) on a connection: f's results, or nil, err.
local function with(self, f)
  local conn = self.conn
  if conn then return f(conn) end
  local err
  conn, err = self.connect()
  if not conn then return nil, err or "cannot connect to redis" end
  local ok, a, b = pcall(f, conn)
  if type(conn.set_keepalive) == "function" then
    -- a connection that failed is closed, not pooled
    if ok and not (a == nil and b ~= nil) then
      pcall(conn.set_keepalive, conn, _M.REDIS_KEEPALIVE, _M.REDIS_POOL)
    elseif type(conn.close) == "function" then
      pcall(conn.close, conn)
    end
  elseif type(conn.quit) == "function" then
    pcall(conn.quit, conn)
  end
  if not ok then error(a, 0) end
  return a, b
end

function redis_mt:get(key)
  return with(self, function(r)
    local v, err = r:get(key)
    if v == nil and err then return nil, err end
    if is_nil(v) then return nil end
    return v
  end)
end

function redis_mt:set(key, value, ttl)
  return with(self, function(r)
    local ok, err = r:setex(key, ttl, value)
    if not ok or is_nil(ok) then return nil, err or "SETEX failed" end
    return true
  end)
end

function redis_mt:lock(key, ttl)
  local me = owner()
  local got, err = with(self, function(r)
    local ok, e = r:set(key, me, "NX", "EX", ttl)
    if ok == nil and e then return nil, e end
    return ok == true or ok == "OK"
  end)
  if got then self.held[key] = me end
  return got, err
end

function redis_mt:unlock(key)
  local me = self.held[key]
  self.held[key] = nil
  if not me then return true end
  return with(self, function(r)
    local v, err = r:get(key)
    if v == nil and err then return nil, err end
    if v == me then
      local n, e = r:del(key)
      if n == nil and e then return nil, e end
    end
    return true
  end)
end

function redis_mt:delete(key)
  return with(self, function(r)
    local n, err = r:del(key)
    if n == nil and err then return nil, err end
    return true
  end)
end

function _M.redis(client)
  local self = setmetatable({ held = {} }, redis_mt)
  if type(client) == "function" then
    self.connect = client
  elseif (type(client) == "table" or type(client) == "userdata") and type(method(client, "get")) == "function"
      and type(method(client, "setex")) == "function" then
    self.conn = client
  else
    fail("argument.type", "client", "token_cache.redis needs a connected redis client (get, setex, set, del)"
         .. " or a function returning one")
  end
  return self
end


-- redis://HOST[:PORT][/DB] (the CLI's --token-cache): a cache over
-- redis-lua that connects for each operation (timeout: s per socket
-- operation, default 1), so that a Redis down at start-up, or one that
-- restarts, is only a cache failure. -> cache | nil, message (the message
-- does not quote the URL: it may hold a password one day).
_M.REDIS_TIMEOUT = 1

local function redis_lua()
  local ok, redis = pcall(require, "redis")
  if ok and type(redis) == "table" then return redis end
  -- Debian's lua-redis is pure Lua but installed for Lua 5.1-5.3 only: its
  -- 5.3 file serves 5.4 as it is (loaded, package.path left alone)
  local chunk = loadfile("/usr/share/lua/5.3/redis.lua")
  if chunk then
    ok, redis = pcall(chunk, "redis")
    if ok and type(redis) == "table" then
      package.loaded.redis = redis
      return redis
    end
  end
  return nil
end

function _M.redis_url(url, timeout)
  if type(url) ~= "string" then return nil, "the token cache must be a redis:// URL" end
  local rest = url:match("^[Rr][Ee][Dd][Ii][Ss]://(.*)$")
  if not rest then return nil, "the token cache must be a URL like redis://127.0.0.1:6379/0" end
  if rest:find("@", 1, true) then return nil, "a password in the token cache URL is not supported" end
  local host, port, db = rest:match("^(%[[%x:]+%]):?(%d*)/?(%d*)$")
  if host then
    host = host:sub(2, -2)
  else
    host, port, db = rest:match("^([%w%.%-]+):?(%d*)/?(%d*)$")
  end
  port, db = tonumber(port ~= "" and port or "6379"), tonumber(db ~= "" and db or nil)
  if not host or not port or port < 1 or port > 65535 then
    return nil, "the token cache URL must be redis://HOST:PORT[/DB]"
  end
  local redis = redis_lua()
  if not redis then return nil, "a redis token cache needs redis-lua (Debian: lua-redis)" end
  timeout = timeout or _M.REDIS_TIMEOUT
  return _M.redis(function()
    local c = redis.connect{ host = host, port = port, timeout = timeout }
    if db and db ~= 0 then c:select(db) end
    return c
  end)
end


return _M
