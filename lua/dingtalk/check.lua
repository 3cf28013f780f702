-- Argument checks shared by every call: a bad argument becomes an
-- "argument" error table before any byte is sent. Messages name the field,
-- never its value, so a token passed in the wrong place cannot leak.
local core = require "dingtalk.core"

local error = error
local pairs = pairs
local type = type
local printable = core.printable
local unknown_key = core.unknown_key
local str_byte = string.byte
local str_find = string.find
local str_lower = string.lower
local str_format = string.format
local str_gsub = string.gsub

local _M = {}


function _M.fail(code, field, message)
  error(core.error{
    kind = "argument", code = code, field = field, message = message,
    retryable = false,
  }, 0)
end
local fail = _M.fail


-- Length of the well-formed UTF-8 sequence at byte i of s, or 0 (strict:
-- no overlong forms, surrogates or code points past U+10FFFF). 5.1 and
-- LuaJIT have no utf8 library.
local function utf8_len(s, i)
  local c = str_byte(s, i)
  local size, lo, hi
  lo, hi = 0x80, 0xBF
  if c < 0x80 then return 1
  elseif c >= 0xC2 and c <= 0xDF then size = 2
  elseif c >= 0xE0 and c <= 0xEF then
    size = 3
    if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
  elseif c >= 0xF0 and c <= 0xF4 then
    size = 4
    if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
  else
    return 0
  end
  for j = 1, size - 1 do
    local b = str_byte(s, i + j)
    if not b or b < lo or b > hi then return 0 end
    lo, hi = 0x80, 0xBF
  end
  return size
end
_M.utf8_len = utf8_len


-- A well-formed UTF-8 string?
local function valid_utf8(s)
  if not str_find(s, "[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local size = utf8_len(s, i)
    if size == 0 then return false end
    i = i + size
  end
  return true
end
_M.valid_utf8 = valid_utf8


-- Edit distance of a and b with adjacent transpositions counting as one
-- edit ("endpiont" is one slip away from "endpoint", not two).
local function distance(a, b)
  local la, lb = #a, #b
  local prev2, prev = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = str_byte(a, i)
    for j = 1, lb do
      local cb = str_byte(b, j)
      local d = prev[j - 1] + (ca == cb and 0 or 1)
      if prev[j] + 1 < d then d = prev[j] + 1 end
      if cur[j - 1] + 1 < d then d = cur[j - 1] + 1 end
      if i > 1 and j > 1 and ca == str_byte(b, j - 1) and str_byte(a, i - 1) == cb
          and prev2[j - 2] + 1 < d then
        d = prev2[j - 2] + 1
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[lb]
end

-- Case, "-" and "_" do not tell names apart for a suggestion: robotcode,
-- robot_code and robot-code all point at robotCode or --robot-code.
local function folded(s)
  return (str_gsub(str_lower(s), "[-_]", ""))
end

-- suggest(name, known) -> the known name (a set: name -> anything, or an
-- array of names) `name` most likely misspells, or nil when none is close:
-- the same name but for case, "-" and "_", else at most one edit for
-- names up to 6 bytes and two for longer ones. Used for options, call
-- arguments and the command's options alike.
local function suggest(name, known)
  if type(name) ~= "string" or #name > 64 then return nil end
  local f = folded(name)
  if f == "" then return nil end
  local limit = #f <= 2 and 0 or #f <= 6 and 1 or 2
  local best, best_d
  for k, v in pairs(known) do
    local cand = type(k) == "string" and k or v
    if type(cand) == "string" and cand ~= name then
      local d = distance(f, folded(cand))
      if d <= limit and (best_d == nil or d < best_d or (d == best_d and cand < best)) then
        best, best_d = cand, d
      end
    end
  end
  return best
end
_M.suggest = suggest


-- The table of named arguments itself, and no key the call does not know
-- (a misspelt `robotcode` must not silently become "missing robotCode").
function _M.args(args, allowed, what)
  if type(args) ~= "table" then
    fail("argument.not_table", "(arguments)",
         str_format("%s expects a table of named arguments, got %s", what, type(args)))
  end
  local k = unknown_key(args, allowed)
  if k == nil then return end
  local name = type(k) == "string" and #k <= 64 and k or "(" .. type(k) .. " key)"
  local known = type(k) == "string" and suggest(k, allowed)
  local hint = known and "; did you mean " .. known .. "?" or ""
  fail("argument.unknown_key", name, str_format("%s does not take %s%s", what, name, hint))
end


-- A required, non-empty, printable UTF-8 string of at most `max` bytes.
function _M.string(args, field, max)
  local v = args[field]
  -- Fast path for the usual value, printable ASCII, in one C pass (a Lua
  -- pattern scan cost ~6x more per byte). Anything else takes the full
  -- checks, which raise the precise error.
  if printable(v, max) then return v end
  if v == nil then
    fail("argument.missing", field, field .. " is required")
  end
  if type(v) ~= "string" then
    fail("argument.type", field, field .. " must be a string, got " .. type(v))
  end
  if v == "" then
    fail("argument.empty", field, field .. " must not be empty")
  end
  if #v > max then
    fail("argument.too_long", field,
         str_format("%s must be at most %d bytes, got %d", field, max, #v))
  end
  if str_find(v, "[%z\1-\31\127]") then
    fail("argument.control_char", field, field .. " contains a control character")
  end
  if not valid_utf8(v) then
    fail("argument.utf8", field, field .. " is not valid UTF-8")
  end
  return v
end


return _M
