-- The `dingtalk` command: robot quick entries from ops tooling.
--
--   dingtalk robot clear-plugins --robot-code CODE [--robot-code CODE ...] | --from FILE
--   dingtalk robot query-plugins --robot-code CODE
--   dingtalk robot set-plugins --robot-code CODE --file entries.json
--
-- All the logic is here (bin/dingtalk only calls main), so specs can run it
-- in-process as well as as a process. main(argv, sys) returns the exit
-- code: 0 done, 1 the platform refused or answered false, 2 usage, 3
-- transport failure (the exit-code table of HELP.main, which README repeats).
-- Neither the token nor the app secret is ever written anywhere: errors
-- come redacted from the library, no message quotes an option value other
-- than robot codes and file names, and every line and JSON string written
-- is redacted once more here (a token pasted where a robot code belongs).
-- With --json, stdout gets JSON whatever happens: one document with the
-- results (query-plugins, set-plugins), one line per code (clear-plugins,
-- as each finishes), {"error": {...}} for a usage or internal error, or
-- {"help": "..."}; its strings are valid UTF-8 whatever the input was.
-- clear-plugins runs as one batch (clear_plugins_many): --concurrency,
-- --rate, --journal (resume), Ctrl-C, progress and summary are in
-- clear_many and the functions just above it.
local cjson = require "cjson"
-- the module first: a core that cannot be loaded is reported with the
-- way to build it (dingtalk.lua)
local dingtalk = require "dingtalk"
local core = require "dingtalk.core"
local utf8_len = require("dingtalk.check").utf8_len
local check_string = require("dingtalk.check").string
local suggest = require("dingtalk.check").suggest

local concat = table.concat
local floor = math.floor
local io_popen = io.popen
local os_date = os.date
local sort = table.sort
local error = error
local getmetatable = getmetatable
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type
local str_find = string.find
local str_format = string.format
local str_gsub = string.gsub
local str_match = string.match
local str_sub = string.sub

local json = cjson.new()

local _M = {}

_M.EXIT_OK, _M.EXIT_REFUSED, _M.EXIT_USAGE, _M.EXIT_TRANSPORT = 0, 1, 2, 3

local HELP = {
  main = [[
Usage: dingtalk robot COMMAND [options]

Commands:
  robot clear-plugins   remove every quick entry of single-chat bots
  robot query-plugins   list a bot's quick entries
  robot set-plugins     replace a bot's quick entries from a JSON file

Access token, first found wins:
  --token TOKEN                      (visible to other users in ps: prefer the environment)
  DINGTALK_ACCESS_TOKEN
  DINGTALK_APP_KEY + DINGTALK_APP_SECRET   (the command fetches a token itself)
  --token-cache redis://HOST:PORT[/DB]     (or DINGTALK_TOKEN_CACHE: with app credentials,
                     share the fleet's token through Redis; a Redis failure is not fatal)

Options for every command:
  --endpoint URL     API host (or DINGTALK_ENDPOINT; default https://api.dingtalk.io)
  --cafile FILE      CA bundle for TLS (or DINGTALK_CAFILE)
  --timeout MS       per attempt (default 10000)
  --retries N        retries of retryable failures (default 3; 0 turns them off)
  --insecure-http    allow plain http to a host other than loopback
                     (the token then travels in clear text)
  --json             JSON on stdout, for scripts: one document (clear-plugins:
                     one line per code), also for errors: {"error": {"kind",
                     "code", "message", ...}}
  --verbose          one line per HTTP attempt on stderr
  -h, --help         this text; `dingtalk robot COMMAND --help` for a command
  --version          the version of the command, Lua and libcurl

Exit codes (with several codes, the worst outcome):
  0    done
  1    the platform refused (the error on stderr) or answered false ("not
       cleared" / "not set" on stdout)
  2    usage: a bad option or argument, nothing sent for it
  3    transport failure (no answer: timeout, connection, TLS)
  4    the module cannot be loaded (the message says how to build it)
  130  interrupted (Ctrl-C)
]],
  ["clear-plugins"] = [[
Usage: dingtalk robot clear-plugins --robot-code CODE [--robot-code CODE ...] [CODE ...]
       dingtalk robot clear-plugins --from FILE      (one code a line; '-' is stdin; # comments)

Removes every quick entry of each bot (POST /v1.0/robot/plugins/clear),
several bots at a time, and reports each code as it finishes: "CODE:
cleared" on stdout, or the error on stderr. Retryable failures are retried;
the platform's throttling slows the batch down and loses nothing; the
monthly quota answer stops it (the codes left are not attempted).

  --concurrency N    calls in flight at once (default 8, 1..256)
  --rate QPS         at most QPS requests a second (default: no limit;
                     the platform allows an app 20 a second per API)
  --journal FILE     append one JSON line per code: robotCode, outcome
                     (cleared, empty = the platform answered false, failed,
                     not_attempted), code (the error code), request_id,
                     time; a run given an existing journal skips the codes
                     it records as cleared or empty (resume)
  --json             one JSON line per code on stdout instead of the text:
                     robotCode, ok, outcome (also "skipped"), result, error

Ctrl-C finishes the calls in flight, writes the journal and exits 130; the
codes not sent are "not attempted". On a terminal, stderr shows one line of
progress (done/total, rate, failures, ETA). A summary of the run (cleared,
already empty, failed by error code, not attempted) ends on stderr when more
than one code was given. Exit code: the worst outcome over all codes (130
after Ctrl-C).
]],
  ["query-plugins"] = [[
Usage: dingtalk robot query-plugins --robot-code CODE [--robot-code CODE ...]

Lists each bot's quick entries (POST /v1.0/robot/plugins/query): name, icon,
pcUrl and mobileUrl, one entry a line, tab-separated after the code line.
]],
  ["set-plugins"] = [[
Usage: dingtalk robot set-plugins --robot-code CODE --file entries.json

Replaces the bot's quick entries (POST /v1.0/robot/plugins/set). The file
holds a JSON array of {"name", "icon", "pcUrl", "mobileUrl"} objects (name
and icon required), or an object with such an array in "pluginInfoList";
'-' reads stdin.
]],
}
HELP.robot = HELP.main

local VALUE_OPTS = { token = true, endpoint = true, ["robot-code"] = true, from = true,
                     file = true, timeout = true, retries = true, cafile = true }
VALUE_OPTS["token-cache"] = true   -- a fleet's shared token cache
local FLAG_OPTS = { json = true, verbose = true, help = true, ["insecure-http"] = true, version = true }
-- clear-plugins only: the batch
local BATCH_OPTS = { concurrency = true, rate = true, journal = true }
for name in pairs(BATCH_OPTS) do VALUE_OPTS[name] = true end


-- A usage error: raised inside main, caught there. lib: the JSON error for
-- an argument error of the library (its code and field), if it is one.
local function usage(message, lib)
  error({ usage = message, lib = lib }, 0)
end


-- The secrets of the running main (token, app secret), taken out of all it
-- writes; main sets them, so encode and one_line need no extra argument.
local active = {}


-- s with every byte that does not belong to a well-formed UTF-8 sequence
-- replaced by U+FFFD (strict: no overlong forms, surrogates or code points
-- past U+10FFFF). cjson copies bytes as they are, so a robot code from a
-- file would otherwise make the JSON output invalid.
local REPLACEMENT = "\239\191\189"
local function utf8_fix(s)
  if not str_find(s, "[\128-\255]") then return s end
  local parts, i, n, from = {}, 1, #s, 1
  while i <= n do
    local size = utf8_len(s, i)
    if size > 0 then
      i = i + size
    else
      parts[#parts + 1] = str_sub(s, from, i - 1)
      parts[#parts + 1] = REPLACEMENT
      i = i + 1
      from = i
    end
  end
  parts[#parts + 1] = str_sub(s, from)
  return concat(parts)
end
_M.utf8_fix = utf8_fix


-- Any text on its way out: the secrets taken out, then valid UTF-8.
local function clean(s)
  s = tostring(s)
  if active.token or active.secret then s = core.redact(s, active.token, active.secret) end
  return utf8_fix(s)
end


local function parse(argv)
  local words, opts = {}, { ["robot-code"] = {} }
  -- The first usage error is kept, not raised at once: parsing goes on so
  -- that a --json after the culprit still asks for a JSON error.
  local bad
  local function usage_later(message) bad = bad or message end
  local i, n = 1, #argv
  while i <= n do
    local a = argv[i]
    if a == "-h" then a = "--help" end
    if a == "--" then
      for j = i + 1, n do words[#words + 1] = argv[j] end
      break
    end
    if str_sub(a, 1, 2) == "--" then
      local name, value = str_match(a, "^%-%-([^=]+)=(.*)$")
      name = name or str_sub(a, 3)
      if FLAG_OPTS[name] then
        if value then usage_later("--" .. name .. " takes no value") end
        opts[name] = true
      elseif VALUE_OPTS[name] then
        if not value then
          i = i + 1
          value = argv[i]
          if value == nil then
            usage_later("--" .. name .. " needs a value")
            break
          end
        end
        if name == "robot-code" then
          local list = opts["robot-code"]
          list[#list + 1] = value
        elseif opts[name] ~= nil then
          usage_later("--" .. name .. " given twice")
        else
          opts[name] = value
        end
      else
        local known = suggest(name, VALUE_OPTS) or suggest(name, FLAG_OPTS)
        usage_later("unknown option --" .. name .. (known and "; did you mean --" .. known .. "?" or ""))
      end
    elseif str_sub(a, 1, 1) == "-" and a ~= "-" then
      -- only the letter: "-tTOKEN" must not print the token
      usage_later("unknown option " .. str_sub(a, 1, 2))
    else
      words[#words + 1] = a
    end
    i = i + 1
  end
  return words, opts, bad
end


-- JSON with real arrays (cjson 2.1.0 writes an empty table as {}) and
-- sorted keys (stable output).
local ARRAY = {}
local function array(t) return setmetatable(t, ARRAY) end

-- Every string goes through clean (secrets out, valid UTF-8).
local function encode(v)
  if type(v) == "string" then return json.encode(clean(v)) end
  if type(v) ~= "table" then return json.encode(v) end
  local parts = {}
  if getmetatable(v) == ARRAY then
    for i = 1, #v do parts[i] = encode(v[i]) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys, vals = {}, {}
  for k, x in pairs(v) do
    local key = clean(k)
    keys[#keys + 1] = key
    vals[key] = x
  end
  sort(keys)
  for i, k in ipairs(keys) do parts[i] = json.encode(k) .. ":" .. encode(vals[k]) end
  return "{" .. concat(parts, ",") .. "}"
end
_M.encode = encode


-- One line for a terminal: secrets out, valid UTF-8, and no control
-- character (C0, DEL, C1), line separator or bidi override left to move the
-- cursor or reorder what an operator reads.
-- "1 quick entry", "3 quick entries"
local function entries_text(n)
  return n .. (n == 1 and " quick entry" or " quick entries")
end

local function one_line(s)
  s = str_gsub(clean(s), "[%c]", " ")
  s = str_gsub(s, "\194[\128-\159]", " ")
  s = str_gsub(s, "\226\128[\168-\174]", " ")
  return (str_gsub(s, "\226\129[\166-\169]", " "))
end


local function read_all(sys, file)
  if file == "-" then return sys.stdin:read("*a") end
  local f = sys.open(file, "rb")
  if not f then usage("cannot read " .. file) end
  local s = f:read("*a")
  f:close()
  return s or ""
end


local function robot_codes(sys, words, opts, at_most_one)
  local codes = {}
  -- an empty code on the command line is a slip of the shell (an unset
  -- variable): said as such, not as a failed call for the code ""
  for _, c in ipairs(opts["robot-code"]) do
    if c == "" then usage("--robot-code needs a robot code, got an empty value") end
    codes[#codes + 1] = c
  end
  for i = 3, #words do
    if words[i] == "" then usage("a robot code on the command line is empty") end
    codes[#codes + 1] = words[i]
  end
  if opts.from then
    for line in (read_all(sys, opts.from) .. "\n"):gmatch("([^\n]*)\n") do
      line = str_match(line, "^%s*(.-)%s*$")
      if line ~= "" and str_sub(line, 1, 1) ~= "#" then codes[#codes + 1] = line end
    end
  end
  if #codes == 0 then usage("no robot code: give --robot-code CODE" .. (at_most_one and "" or " or --from FILE")) end
  if at_most_one and #codes > 1 then usage("one robot code at a time") end
  return codes
end


local function whole(opts, name, lo, hi)
  local v = opts[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n % 1 ~= 0 or n < lo or n > hi then
    usage("--" .. name .. " must be a whole number from " .. lo .. " to " .. hi)
  end
  return n
end


local function make_client(sys, opts)
  local env = sys.getenv
  local o = {
    endpoint = opts.endpoint or env("DINGTALK_ENDPOINT"),
    cafile = opts.cafile or env("DINGTALK_CAFILE"),
    insecure_http = opts["insecure-http"] or nil,
    timeout = whole(opts, "timeout", 1, 2147483647),
    retries = whole(opts, "retries", 0, 100),
  }
  if o.endpoint == "" then o.endpoint = nil end
  if o.cafile == "" then o.cafile = nil end
  local token = opts.token
  if token == nil or token == "" then token = env("DINGTALK_ACCESS_TOKEN") end
  if token == "" then token = nil end
  if not token then
    local key, secret = env("DINGTALK_APP_KEY"), env("DINGTALK_APP_SECRET")
    if key and key ~= "" and secret and secret ~= "" then
      o.app_key, o.app_secret = key, secret
    else
      usage("no access token: use --token, DINGTALK_ACCESS_TOKEN, "
            .. "or DINGTALK_APP_KEY and DINGTALK_APP_SECRET")
    end
  end
  -- a fleet's token through Redis (only with app credentials)
  local cache_url = opts["token-cache"] or env("DINGTALK_TOKEN_CACHE")
  if cache_url and cache_url ~= "" and o.app_key then
    local cache, why = require("dingtalk.token_cache").redis_url(cache_url)
    if not cache then usage("--token-cache: " .. why) end
    o.token_cache = cache
  elseif opts["token-cache"] then
    usage("--token-cache needs app credentials (DINGTALK_APP_KEY and DINGTALK_APP_SECRET)")
  end
  if opts.verbose then
    o.on_request = function(ev)
      local line = str_format("dingtalk: %s %s attempt %d -> %s%s in %.0f ms%s%s",
        ev.method, ev.path, ev.attempt, ev.status and tostring(ev.status) or "no response",
        ev.code and (" " .. ev.code) or "", ev.duration or 0,
        ev.request_id and (" [request " .. ev.request_id .. "]") or "",
        ev.retry_in and str_format(", retrying in %.2f s", ev.retry_in) or "")
      sys.stderr:write(one_line(line), "\n")
    end
  end
  local ok, c = pcall(sys.new, o)
  if not ok then
    if type(c) ~= "table" then usage(tostring(c)) end
    -- the library names its option; here it is a flag
    local hint = c.code == "argument.insecure" and " (on the command line: --insecure-http)" or ""
    usage(str_gsub(tostring(c), "^dingtalk: ", "") .. hint,
          { kind = c.kind, code = c.code, field = c.field, message = tostring(c.message) .. hint })
  end
  return c, token
end


-- Exit code for one outcome.
local function severity(err)
  if err == nil then return 0 end
  if type(err) ~= "table" then return _M.EXIT_TRANSPORT end
  if err.kind == "transport" then return _M.EXIT_TRANSPORT end
  if err.kind == "argument" then return _M.EXIT_USAGE end
  return _M.EXIT_REFUSED
end


local function error_json(err)
  if type(err) ~= "table" then return { kind = "internal", message = one_line(err) } end
  return { kind = err.kind, code = err.code, message = err.message, status = err.status,
           request_id = err.request_id, retryable = err.retryable, attempts = err.attempts,
           field = err.field }
end


local function entries_from(sys, file)
  local ok, v = pcall(json.decode, read_all(sys, file))
  if not ok then usage(file .. " is not valid JSON") end
  if type(v) == "table" and v.pluginInfoList ~= nil then v = v.pluginInfoList end
  if type(v) ~= "table" then usage(file .. " must hold a JSON array of entries") end
  return v
end


-------------------------------------------------------------------------------
-- clear-plugins: many bots through the library's batch (clear_plugins_many):
-- --concurrency, --rate, --journal (resume), Ctrl-C, progress, summary.

_M.EXIT_INTERRUPTED = 130

local DEFAULT_CONCURRENCY = 8
local MAX_CONCURRENCY = 256

local function now() return core.now() end

-- "2026-12-01T04:50:07Z"
local function utc_time() return os_date("!%Y-%m-%dT%H:%M:%SZ") end


-- One checked number option (--rate takes fractions).
local function positive(opts, name, hi)
  local v = opts[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n ~= n or n <= 0 or n > hi then
    usage("--" .. name .. " must be a number above 0 and at most " .. hi)
  end
  return n
end


-- The outcome of one entry of the batch: "cleared", "empty" (the platform
-- answered false), "not_attempted" or "failed".
local function outcome(r)
  if r.ok then return r.result == true and "cleared" or "empty" end
  local e = r.error
  if type(e) == "table" and e.code == "batch.not_attempted" then return "not_attempted" end
  return "failed"
end


-- The journal: one JSON object a line, appended as each code finishes.
-- read_journal -> set of codes recorded as cleared or empty (done), and
-- the number of lines that could not be read (a line cut short by a crash).
local DONE = { cleared = true, empty = true }

local function read_journal(sys, file)
  local f = sys.open(file, "rb")
  if not f then return {}, 0, nil end
  local text = f:read("*a") or ""
  f:close()
  local done, bad = {}, 0
  for line in text:gmatch("[^\n]+") do
    local ok, v = pcall(json.decode, line)
    if ok and type(v) == "table" and type(v.robotCode) == "string" then
      if DONE[v.outcome] then done[v.robotCode] = true end
    elseif str_find(line, "%S") then
      bad = bad + 1
    end
  end
  return done, bad, text
end

local function open_journal(sys, file, existing)
  local f = sys.open(file, "ab")
  if not f then usage("cannot write the journal " .. file) end
  -- a last line cut short (a crash, a full disk) must not swallow the next
  if existing and existing ~= "" and str_sub(existing, -1) ~= "\n" then f:write("\n") end
  return f
end

local function journal_line(r, o)
  local e = type(r.error) == "table" and r.error or nil
  return encode{
    robotCode = r.robotCode, outcome = o,
    code = e and e.code or nil,
    request_id = (e and e.request_id) or r.request_id,
    time = utc_time(),
  }
end


-- Is stderr a terminal? Asked once per run, of the shell (`test -t 2`: the
-- child inherits our stderr; no C helper needed).
local function stderr_is_tty(sys)
  if sys.isatty ~= nil then return sys.isatty end
  local p = io_popen("test -t 2 && echo y", "r")
  if not p then return false end
  local s = p:read("*a") or ""
  p:close()
  return str_find(s, "y", 1, true) ~= nil
end


local function clock(s)
  s = floor(s + 0.5)
  if s >= 3600 then return str_format("%d:%02d:%02d", floor(s / 3600), floor(s % 3600 / 60), s % 60) end
  return str_format("%d:%02d", floor(s / 60), s % 60)
end


-- The one-line progress display, redrawn with \r at most 10 times a second;
-- clear() before any other line goes to stderr.
local function progress(sys, total, enabled)
  local p = { done = 0, failed = 0, shown = false }
  local t0, last = now(), -1
  local err = sys.stderr
  function p.draw(force)
    if not enabled then return end
    local t = now()
    if not force and t - last < 0.1 then return end
    last = t
    local elapsed = t - t0
    local rate = elapsed > 0 and p.done / elapsed or 0
    local n = total()
    local eta = rate > 0 and clock((n - p.done) / rate) or "?"
    err:write(str_format("\r%d/%d done, %.1f/s, %d failed, ETA %s\27[K", p.done, n, rate, p.failed, eta))
    p.shown = true
  end
  function p.clear()
    if p.shown then err:write("\r\27[K") p.shown = false end
  end
  function p.elapsed() return now() - t0 end
  return p
end


local function event_text(ev)
  if ev.kind == "pause" then
    local why = ev.reason == "ip_blocked"
      and "the platform blocked this IP address (http.ip_blocked)"
      or "the platform throttles this app"
    return str_format("dingtalk: %s: pausing the batch for %.1f s", why, tonumber(ev.seconds) or 0)
  elseif ev.kind == "stop" and ev.reason == "quota" then
    return "dingtalk: the monthly call quota is used up (Forbidden.AccessDenied.ApiCountLimitForOrg): "
      .. "stopping; the codes left are not attempted"
  end
  return "dingtalk: batch event: " .. tostring(ev.kind) .. " " .. tostring(ev.reason)
end


local function summary_lines(n, counts, by_code, skipped, elapsed, interrupted)
  local failed = {}
  local codes = {}
  for code in pairs(by_code) do codes[#codes + 1] = code end
  sort(codes)
  for _, code in ipairs(codes) do failed[#failed + 1] = code .. " " .. by_code[code] end
  local lines = {
    str_format("dingtalk: %d codes in %.1f s%s:", n, elapsed, interrupted and " (interrupted)" or ""),
    str_format("  cleared        %d", counts.cleared),
    str_format("  already empty  %d (the platform answered false)", counts.empty),
    str_format("  failed         %d%s", counts.failed, #failed > 0 and " (" .. concat(failed, ", ") .. ")" or ""),
    str_format("  not attempted  %d", counts.not_attempted),
  }
  if skipped > 0 then
    lines[#lines + 1] = str_format("  skipped        %d (cleared or empty in the journal)", skipped)
  end
  return lines
end


local function clear_many(sys, opts, codes, client, token)
  local out, err = sys.stdout, sys.stderr
  local concurrency = whole(opts, "concurrency", 1, MAX_CONCURRENCY) or DEFAULT_CONCURRENCY
  local rate = positive(opts, "rate", 100000)
  local max_code = require("dingtalk.robot").MAX_ROBOT_CODE

  -- resume: the codes the journal records as done are not sent again
  local journal, done, skipped = nil, {}, 0
  if opts.journal then
    local bad, existing
    done, bad, existing = read_journal(sys, opts.journal)
    if bad > 0 then
      err:write(one_line(str_format("dingtalk: %s: %d unreadable journal lines ignored", opts.journal, bad)), "\n")
    end
    journal = open_journal(sys, opts.journal, existing)
  end

  local counts = { cleared = 0, empty = 0, failed = 0, not_attempted = 0 }
  local by_code, worst = {}, 0
  local total = #codes   -- less the skipped ones, once known
  local prog = progress(sys, function() return total end, not opts.json and #codes > 1 and stderr_is_tty(sys))

  -- one finished (or refused, or not attempted) code: output, journal, counts
  local function report(r)
    local o = outcome(r)
    counts[o] = counts[o] + 1
    local e = r.error
    if o == "failed" then
      local c = type(e) == "table" and e.code or "internal"
      by_code[c] = (by_code[c] or 0) + 1
      prog.failed = prog.failed + 1
    end
    if o ~= "cleared" then
      local s = o == "empty" and 1 or severity(e)
      if s > worst then worst = s end
    end
    if o ~= "not_attempted" then prog.done = prog.done + 1 end
    if journal then
      journal:write(journal_line(r, o), "\n")
      journal:flush()
    end
    if opts.json then
      local j = { robotCode = r.robotCode, ok = r.ok, outcome = o, result = r.result }
      if e ~= nil then j.error = error_json(e) end
      out:write(encode(j), "\n")
    elseif o == "cleared" or o == "empty" then
      out:write(one_line(r.robotCode .. (o == "cleared" and ": cleared"
                                         or ": not cleared (the platform answered false)")), "\n")
    end
    if o == "failed" then
      prog.clear()
      local text = type(e) == "table" and str_gsub(tostring(e), "^dingtalk: ", "") or tostring(e)
      err:write(one_line("dingtalk: " .. r.robotCode .. ": " .. text), "\n")
    end
    if o ~= "not_attempted" then prog.draw(prog.done == total) end
  end

  -- what is sent: codes the library would refuse are reported one by one
  -- (an argument error each) instead of failing the whole batch
  local todo, refused = {}, {}
  for _, code in ipairs(codes) do
    if done[code] then
      skipped = skipped + 1
      if opts.json then out:write(encode{ robotCode = code, ok = true, outcome = "skipped" }, "\n") end
    else
      local ok, e = pcall(check_string, { robotCode = code }, "robotCode", max_code)
      if ok then todo[#todo + 1] = code else refused[#refused + 1] = { robotCode = code, ok = false, error = e } end
    end
  end
  total = #codes - skipped
  for _, r in ipairs(refused) do report(r) end

  -- Ctrl-C: the batch finishes the calls in flight and starts no new one
  local sigint = core.sigint
  local interrupted = false
  local function should_stop()
    if not interrupted and sigint and core.interrupted() then interrupted = true end
    return interrupted
  end
  local reported = {}
  local results
  if #todo > 0 then
    if sigint then sigint(true) end
    local ok, res = pcall(client.robot.clear_plugins_many, todo, {
      token = token, concurrency = concurrency, rate = rate,
      should_stop = should_stop,
      on_result = function(r)
        reported[r.robotCode] = (reported[r.robotCode] or 0) + 1
        report(r)
      end,
      on_event = function(ev)
        prog.clear()
        err:write(one_line(event_text(ev)), "\n")
        prog.draw(true)
      end,
    })
    should_stop()
    if sigint then sigint(false) end
    if not ok then
      prog.clear()
      if journal then journal:close() end
      -- the library refused an argument (the token, an option) before sending
      if type(res) == "table" and res.kind == "argument" then
        usage(str_gsub(tostring(res), "^dingtalk: ", ""),
              { kind = res.kind, code = res.code, field = res.field, message = tostring(res.message) })
      end
      error(res, 0)
    end
    results = res
  end
  -- the codes the batch did not finish (not attempted): reported once each
  for _, r in ipairs(results or {}) do
    local n = reported[r.robotCode]
    if n and n > 0 then reported[r.robotCode] = n - 1 else report(r) end
  end
  prog.clear()
  if journal then journal:close() end
  if #codes > 1 or skipped > 0 then
    for _, line in ipairs(summary_lines(#codes, counts, by_code, skipped, prog.elapsed(), interrupted)) do
      err:write(one_line(line), "\n")
    end
  end
  if interrupted then return _M.EXIT_INTERRUPTED end
  return worst
end


local COMMANDS = { ["clear-plugins"] = true, ["query-plugins"] = true, ["set-plugins"] = true }

local function run(argv, sys, st)
  local words, opts, bad = parse(argv)
  local out, err = sys.stdout, sys.stderr
  st.json = opts.json
  if opts.token and opts.token ~= "" then active.token = opts.token end
  if bad then usage(bad) end
  local function help(text)
    out:write(opts.json and encode{ help = text } .. "\n" or text)
    return 0
  end
  if opts.version then
    local v = _M.version()
    out:write(opts.json and encode(v) .. "\n" or v.text .. "\n")
    return 0
  end
  if words[1] == nil then
    if opts.help then return help(HELP.main) end
    usage("no command")
  end
  if words[1] ~= "robot" then
    local known = suggest(words[1], { "robot" })
    usage("unknown command " .. one_line(words[1]) .. (known and "; did you mean robot?" or ""))
  end
  local cmd = words[2]
  if cmd == nil then
    if opts.help then return help(HELP.robot) end
    usage("robot needs a command: clear-plugins, query-plugins or set-plugins")
  end
  if not COMMANDS[cmd] then
    local known = suggest(cmd, COMMANDS)
    usage("unknown command robot " .. one_line(cmd) .. (known and "; did you mean robot " .. known .. "?" or ""))
  end
  if opts.help then return help(HELP[cmd]) end
  if opts.from and cmd ~= "clear-plugins" then usage("--from is for clear-plugins") end
  if opts.file and cmd ~= "set-plugins" then usage("--file is for set-plugins") end
  for name in pairs(BATCH_OPTS) do
    if opts[name] and cmd ~= "clear-plugins" then usage("--" .. name .. " is for clear-plugins") end
  end
  if cmd == "set-plugins" and not opts.file then usage("set-plugins needs --file entries.json") end

  local codes = robot_codes(sys, words, opts, false)
  local entries = cmd == "set-plugins" and entries_from(sys, opts.file) or nil
  local client, token = make_client(sys, opts)
  if cmd == "clear-plugins" then
    local ok, rc = pcall(clear_many, sys, opts, codes, client, token)
    client:close()
    if not ok then error(rc, 0) end
    return rc
  end
  local results, worst = array{}, 0
  for _, code in ipairs(codes) do
    local args = { robotCode = code, token = token }
    local ok, res
    if cmd == "clear-plugins" then
      ok, res = pcall(client.robot.clear_plugins, args)
    elseif cmd == "query-plugins" then
      ok, res = pcall(client.robot.query_plugins, args)
    else
      args.pluginInfoList = entries
      ok, res = pcall(client.robot.set_plugins, args)
    end
    local r = { robotCode = code, ok = ok }
    if ok then
      if cmd == "query-plugins" then
        r.pluginInfoList = array(res)
      else
        r.result = res
        if res ~= true then
          r.ok = false
          worst = worst > 1 and worst or 1
        end
      end
    else
      r.error = error_json(res)
      local s = severity(res)
      if s > worst then worst = s end
      local text = type(res) == "table" and str_gsub(tostring(res), "^dingtalk: ", "") or tostring(res)
      err:write(one_line("dingtalk: " .. code .. ": " .. text), "\n")
    end
    results[#results + 1] = r
    if not opts.json and ok then
      if cmd == "query-plugins" then
        out:write(one_line(code .. ": " .. entries_text(#res)), "\n")
        for _, e in ipairs(res) do
          out:write("  ", concat({ one_line(e.name or ""), one_line(e.icon or ""), one_line(e.pcUrl or ""),
                                   one_line(e.mobileUrl or "") }, "\t"), "\n")
        end
      elseif cmd == "clear-plugins" then
        out:write(one_line(code .. (res == true and ": cleared" or ": not cleared (the platform answered false)")),
                  "\n")
      else
        out:write(one_line(code .. (res == true and ": set " .. entries_text(#entries)
                                   or ": not set (the platform answered false)")), "\n")
      end
    end
  end
  client:close()
  if opts.json then out:write(encode{ command = "robot " .. cmd, results = results }, "\n") end
  return worst
end


-- The command's version line: "dingtalk 0.1.0 (Lua 5.4, libcurl 7.88.1)"
-- and its parts (the libcurl the core opened, not the headers it was
-- built with).
function _M.version()
  local jit = rawget(_G, "jit")
  local lua = jit and tostring(jit.version) or _VERSION
  local curl = str_match(core.curl_version or "", "^libcurl/([%w%.%-]+)")
  return { text = str_format("dingtalk %s (%s%s)", dingtalk._VERSION, lua, curl and ", libcurl " .. curl or ""),
           version = dingtalk._VERSION, lua = lua, libcurl = curl }
end


-- main(argv [, sys]) -> exit code. sys (for tests): getenv, stdout,
-- stderr, stdin, open, new (dingtalk.new), isatty (stderr is a terminal:
-- the progress display; asked of the shell when not given).
function _M.main(argv, sys)
  sys = sys or {}
  local s = {
    getenv = sys.getenv or os.getenv,
    stdout = sys.stdout or io.stdout,
    stderr = sys.stderr or io.stderr,
    stdin = sys.stdin or io.stdin,
    open = sys.open or io.open,
    new = sys.new or dingtalk.new,
    isatty = sys.isatty,
  }
  -- a stderr given in-process is no terminal unless said so
  if s.isatty == nil and sys.stderr ~= nil then s.isatty = false end
  local saved = active
  local function secret(name)
    local v = s.getenv(name)
    if v ~= "" then return v end
  end
  active = { token = secret("DINGTALK_ACCESS_TOKEN"), secret = secret("DINGTALK_APP_SECRET") }
  local st = {}
  local ok, code = pcall(run, argv or {}, s, st)
  local rc, doc
  if ok then
    rc = code
  elseif type(code) == "table" and code.usage then
    s.stderr:write(one_line("dingtalk: " .. code.usage .. " (see dingtalk --help)"), "\n")
    doc = code.lib or { kind = "usage", code = "usage", message = code.usage }
    rc = _M.EXIT_USAGE
  else
    s.stderr:write(one_line("dingtalk: internal error: " .. tostring(code)), "\n")
    doc = { kind = "internal", code = "internal", message = tostring(code) }
    rc = _M.EXIT_TRANSPORT
  end
  if doc and st.json then s.stdout:write(encode{ error = doc }, "\n") end
  active = saved
  return rc
end


return _M
