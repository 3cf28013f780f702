-- Running the dingtalk command (bin/dingtalk) as a process from a spec,
-- and reading what it printed. One runner per spec file:
--   local cli = require("spec.helpers.cli").new()
--   local rc, out, err = cli.run({ "robot", "clear-plugins", ... }, env [, stdin])
-- cli.outputs holds every stdout and stderr (and whatever a spec adds), for
-- the final search for secrets; cli.cleanup() removes the temporary files.
local shell = require "spec.helpers.shell"
local cjson = require "cjson"

local q = shell.q

local M = {}

-- The child's environment starts without these: the machine's own settings
-- must not change what a spec sees.
local CLEARED = { "DINGTALK_ACCESS_TOKEN", "DINGTALK_APP_KEY", "DINGTALK_APP_SECRET", "DINGTALK_ENDPOINT",
                  "DINGTALK_CAFILE", "DINGTALK_TOKEN_CACHE", "http_proxy", "HTTP_PROXY", "https_proxy",
                  "HTTPS_PROXY", "all_proxy", "ALL_PROXY" }

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- The shell command that runs the command with args and env (name -> value).
function M.command(args, env)
  local parts = { shell.lua_env("./lua/?.lua;./lua/?/init.lua;" .. package.path, package.cpath, CLEARED) }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = shell.LUA .. " bin/dingtalk"
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

function M.new()
  local r = { tmp = os.tmpname(), outputs = {} }
  local tmp = r.tmp

  -- run(args, env [, stdin]) -> exit code, stdout, stderr
  function r.run(args, env, stdin)
    local cmd = M.command(args, env)
    if stdin then
      M.write(tmp .. ".in", stdin)
      cmd = cmd .. " <" .. q(tmp .. ".in")
    else
      cmd = cmd .. " </dev/null"
    end
    os.execute(cmd .. " >" .. q(tmp .. ".out") .. " 2>" .. q(tmp .. ".err") .. "; echo $? >" .. q(tmp .. ".rc"))
    local out, err = M.read(tmp .. ".out"), M.read(tmp .. ".err")
    r.outputs[#r.outputs + 1] = out
    r.outputs[#r.outputs + 1] = err
    return tonumber(M.read(tmp .. ".rc")), out, err
  end

  -- removes tmp and every tmp.<ext> a spec made
  function r.cleanup(exts)
    for _, ext in ipairs(exts or {}) do os.remove(tmp .. ext) end
    for _, ext in ipairs{ ".out", ".err", ".rc", ".in" } do os.remove(tmp .. ext) end
    os.remove(tmp)
  end
  return r
end

function M.lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Strictly well-formed UTF-8 (Unicode table 3-7: no overlong form, no
-- surrogate, nothing past U+10FFFF), written apart from the command's own.
local UTF8_SEQ = { "[\194-\223][\128-\191]", "\224[\160-\191][\128-\191]",
                   "[\225-\236\238\239][\128-\191][\128-\191]", "\237[\128-\159][\128-\191]",
                   "\240[\144-\191][\128-\191][\128-\191]",
                   "[\241-\243][\128-\191][\128-\191][\128-\191]",
                   "\244[\128-\143][\128-\191][\128-\191]" }
function M.valid_utf8(s)
  local i = 1
  while i <= #s do
    if s:byte(i) < 128 then
      i = i + 1
    else
      local e
      for _, p in ipairs(UTF8_SEQ) do
        e = select(2, s:find("^" .. p, i))
        if e then break end
      end
      if not e then return false, i end
      i = e + 1
    end
  end
  return true
end

-- stdout of a clear-plugins --json run (or a journal): one JSON object a
-- line, valid UTF-8, ending with a newline
function M.json_lines(out)
  local ok, at = M.valid_utf8(out)
  assert(ok, "invalid UTF-8 at byte " .. tostring(at) .. " of: " .. out)
  assert(out:sub(-1) == "\n", "no newline at the end of: " .. out)
  local docs = {}
  for line in out:gmatch("([^\n]*)\n") do docs[#docs + 1] = cjson.decode(line) end
  return docs
end

-- The summary a clear-plugins run of several codes ends stderr with:
-- { "cleared N", "already empty N", "failed N (...)", "not attempted N"[, "skipped N"] }
function M.summary(err)
  local at = err:find("dingtalk: %d+ codes in [%d.]+ s[^\n]*:\n")
  assert(at, "no summary in: " .. err)
  local t = {}
  for l in err:sub(at):gmatch("\n  ([^\n]+)") do
    t[#t + 1] = (l:gsub("%s+", " "):gsub(" %(the platform answered false%)", "")
                  :gsub(" %(cleared or empty in the journal%)", ""))
  end
  return t
end

return M
