-- The batch policy: one call per robot code, many in flight at once, at
-- the platform's pace. ONE policy for every transport: this module decides
-- what starts when, what is tried again and what stops the batch; the I/O
-- is a batch transport's (client:batch_open(n): libcurl's multi interface
-- in the C core, or light threads over cosockets inside nginx), which only
-- starts requests on numbered slots and reports the ones that finished.
--
-- What it does with each answer:
--  * success: the entry; the window (requests in flight) grows back by one
--    after a window's worth of successes, up to `concurrency`;
--  * throttling (403 Forbidden.AccessDenied.Qps*/Qpm*, 429, the old
--    90002/90018/90019 codes): the whole batch pauses (at least the
--    Retry-After; 1 s, doubling while the throttling goes on, longer for the
--    per-minute limits), the window is halved, and the code goes back in
--    the queue: throttling does not use up its retries;
--  * the IP-level block (http.ip_blocked): the whole batch pauses for the
--    block's length (its retry_after), the code goes back in the queue;
--  * the monthly quota (Forbidden.AccessDenied.ApiCountLimitForOrg, old
--    90020): the batch stops at once, the calls in flight finish, the codes
--    not sent yet are batch.not_attempted;
--  * a refused access token (managed tokens only): refreshed once for the
--    whole batch, and each code refused with the old token repeated once;
--  * anything else retryable: retried per code with the client's retry
--    policy (dingtalk.retry: retryable, delay, the retry deadline);
--  * should_stop() true: as the quota stop, without the event.
local core = require "dingtalk.core"
local retry = require "dingtalk.retry"

local error = error
local floor = math.floor
local math_max = math.max
local math_min = math.min
local pcall = pcall
local type = type
local str_find = string.find
local str_match = string.match
local core_error = core.error
local retryable = retry.retryable
local retry_delay = retry.delay
local token_rejected = retry.token_rejected

local _M = {}

_M.DEFAULT_CONCURRENCY = 8
_M.MAX_CONCURRENCY = 256
_M.THROTTLE_PAUSE = 1        -- s: the first shared pause after a throttling answer
_M.QPM_PAUSE = 10            -- s: the same after a per-minute limit
_M.MAX_PAUSE = 60            -- s: cap of the doubling (a Retry-After may ask more)
_M.IP_BLOCK_PAUSE = 300      -- s: an IP block that does not say its length
_M.MAX_THROTTLED = 30        -- throttling answers one code may meet before it fails
_M.POLL = 1                  -- s: longest single wait for the transport
_M.STOP_POLL = 0.2           -- s: the same when should_stop is to be asked


-- Old numeric codes arrive as "90018" (or "90018.0" from older 5.3/5.4
-- cores, which read JSON numbers as floats).
local function plain_code(err)
  local code = err.code
  if type(code) ~= "string" then return nil end
  return str_match(code, "^(%d+)%.0$") or code
end

local THROTTLE_CODES = {
  ["90002"] = true, ["90018"] = true, ["90019"] = true,
  ["system.busy"] = true, systemBusy = true, ["request.overlimit"] = true,
  ["qps.exceed.limit"] = true,
}
local QUOTA_CODES = { ["Forbidden.AccessDenied.ApiCountLimitForOrg"] = true, ["90020"] = true }

-- What the batch does about err: "quota", "ip_blocked", "qpm" (a
-- per-minute limit), "throttled", or nil (the per-code rules).
function _M.classify(err)
  if type(err) ~= "table" then return nil end
  if err.code == "http.ip_blocked" then return "ip_blocked" end
  if err.kind ~= "api" and err.kind ~= "http" then return nil end
  local code = plain_code(err)
  if code then
    if QUOTA_CODES[code] then return "quota" end
    if str_find(code, "^Forbidden%.AccessDenied%.Qpm") then return "qpm" end
    if str_find(code, "^Forbidden%.AccessDenied%.Qps") or THROTTLE_CODES[code] then
      return "throttled"
    end
  end
  if err.status == 429 then return "throttled" end
  return nil
end


local function not_attempted(why)
  return core_error{ kind = "batch", code = "batch.not_attempted", retryable = false,
                     message = "not attempted: " .. why }
end

local WHY = {
  quota = "the batch stopped at the monthly call quota (Forbidden.AccessDenied.ApiCountLimitForOrg)",
  stopped = "the batch was stopped (should_stop)",
  token = "the batch stopped: no access token could be had",
}


-- run(client, codes, job) -> entries (in the order of codes)
-- codes: checked robot codes; job: path, result_field, body(code) -> the
-- request body, and the checked options token, concurrency, rate (req/s or
-- nil), on_result, on_event, should_stop.
function _M.run(client, codes, job)
  local n = #codes
  local p = client._retry
  local now, sleep = p.now, p.sleep
  local tokens = client._tokens
  local token = job.token
  local managed = token == nil and tokens ~= nil
  local path, field, body_of = job.path, job.result_field, job.body
  local concurrency = job.concurrency
  local interval = job.rate and 1 / job.rate or nil
  local on_result, on_event, should_stop = job.on_result, job.on_event, job.should_stop
  local on_request = client._on_request

  local results = {}
  local attempts, failed, throttled, deadline, repeated, last_err = {}, {}, {}, {}, {}, {}
  local waiting = {}          -- codes to try again: { i, at }
  local fresh = 1             -- the next code never sent
  local done = 0
  local window = concurrency  -- requests allowed in flight now
  local grown = 0             -- successes since the window last grew
  local epoch, streak = 0, 0  -- window cuts so far; cuts since the last success
  local pause_until = 0       -- clock time before which nothing starts
  local next_at               -- rate: clock time of the next allowed start
  local stop                  -- "quota" | "stopped" | "token"
  local refreshed_from        -- the managed token refused and refreshed
  local slots, free, inflight = {}, {}, 0
  for s = concurrency, 1, -1 do free[#free + 1] = s end

  local function emit(ev)
    if on_event then pcall(on_event, ev) end   -- a failing hook never fails the batch
  end

  -- rid: the request id of a good answer, when the transport has one (the
  -- journal of an operator run records it)
  local function finish(i, ok, v, rid)
    local r
    if ok then
      r = { robotCode = codes[i], ok = true, result = v, request_id = rid }
    else
      if type(v) == "table" and attempts[i] then v.attempts = attempts[i] end
      r = { robotCode = codes[i], ok = false, error = v }
    end
    results[i] = r
    done = done + 1
    if on_result then pcall(on_result, r) end
  end

  local function halt(reason, ev)
    if stop then return end
    stop = reason
    if ev then emit(ev) end
  end

  -- A throttling answer or an IP block to a request started in window
  -- epoch e: one cut per wave (the answers of the requests already in
  -- flight do not cut again), and a shared pause of at least the server's
  -- Retry-After.
  local function slow_down(class, err, e, t)
    if e == epoch then
      epoch = epoch + 1
      streak = streak + 1
      window = math_max(1, floor(window / 2))
      grown = 0
    end
    local ra = err.retry_after
    if type(ra) ~= "number" or ra < 0 then ra = nil end
    local secs
    if class == "ip_blocked" then
      secs = ra or _M.IP_BLOCK_PAUSE
    else
      local base = class == "qpm" and _M.QPM_PAUSE or _M.THROTTLE_PAUSE
      secs = math_min(_M.MAX_PAUSE, base * 2.0 ^ (math_max(streak, 1) - 1))
      if ra and ra > secs then secs = ra end
    end
    local was = pause_until
    if t + secs > was then
      pause_until = t + secs
      -- said once per pause, and again only when it grows by a second or more
      if was <= t or pause_until - was >= 1 then
        emit{ kind = "pause", reason = class == "ip_blocked" and "ip_blocked" or "throttled",
              seconds = secs }
      end
    end
    return pause_until - t
  end

  -- The next code that may start at t, or nil and the clock time when one
  -- may (nil, nil: none is left to start).
  local function pick(t)
    local best, best_at
    for k = 1, #waiting do
      local at = waiting[k][2]
      if not best_at or at < best_at then best, best_at = k, at end
    end
    local have_fresh = fresh <= n
    if not best and not have_fresh then return nil, nil end
    local gate = 0
    if pause_until > t then gate = pause_until end
    if interval and next_at and next_at > t then gate = math_max(gate, next_at) end
    if gate > 0 then
      if have_fresh then return nil, gate end
      return nil, math_max(gate, best_at)
    end
    if best and best_at <= t then
      local w = waiting[best]
      waiting[best] = waiting[#waiting]
      waiting[#waiting] = nil
      return w[1]
    end
    if have_fresh then
      fresh = fresh + 1
      return fresh - 1
    end
    return nil, best_at
  end

  local function again(i, at, err)
    last_err[i] = err
    waiting[#waiting + 1] = { i, at }
  end

  local function hook(ev)
    if on_request then pcall(on_request, ev) end
  end

  -- One finished request: { slot, ok, result | error }.
  local function settle(d)
    local info = slots[d.slot]
    if not info then return end
    slots[d.slot] = nil
    free[#free + 1] = d.slot
    inflight = inflight - 1
    local i = info[1]
    local t = now()
    local ev = on_request and { method = "POST", path = path, attempt = attempts[i],
                                duration = (t - info[2]) * 1000, ok = d.ok == true,
                                robotCode = codes[i] }
    if d.ok then
      if info[4] == epoch then
        streak = 0
        grown = grown + 1
        if window < concurrency and grown >= window then
          window = window + 1
          grown = 0
        end
      end
      if ev then
        ev.status, ev.request_id = 200, d.request_id
        hook(ev)
      end
      return finish(i, true, d.result, d.request_id)
    end
    local err = d.error
    if tokens and type(err) == "table" then tokens.redact(err) end
    if type(err) ~= "table" then
      err = core_error{ kind = "transport", code = "transport.other", retryable = false,
                        message = "the batch transport gave no error table" }
    end
    local class = _M.classify(err)
    local retry_in
    if class == "quota" then
      halt("quota", { kind = "stop", reason = "quota" })
    elseif class then
      throttled[i] = (throttled[i] or 0) + 1
      if throttled[i] <= _M.MAX_THROTTLED then
        retry_in = slow_down(class, err, info[4], t)
      end
    elseif managed and token_rejected(err) and not repeated[i]
        and (refreshed_from == nil or refreshed_from == info[3]) then
      -- once for the whole batch: the requests in flight with the old
      -- token come back refused too, and are repeated with the new one
      if refreshed_from == nil then
        refreshed_from = info[3]
        tokens.invalidate(info[3])
      end
      repeated[i] = true
      retry_in = 0
    elseif retryable(err) and (failed[i] or 0) < p.retries then
      local f = (failed[i] or 0) + 1
      failed[i] = f
      local wait = retry_delay(p, f, err)
      deadline[i] = deadline[i] or t + p.deadline / 1000
      if t + wait <= deadline[i] then retry_in = wait end
    end
    if ev then
      ev.status, ev.request_id, ev.code, ev.kind = err.status, err.request_id, err.code, err.kind
      ev.retry_in = retry_in
      hook(ev)
    end
    if retry_in then return again(i, t + retry_in, err) end
    return finish(i, false, err)
  end

  local bt = client:batch_open(concurrency)

  local function start(i, t)
    local tok = token
    if managed then
      local err
      tok, err = tokens.get()
      if not tok then
        halt("token", { kind = "stop", reason = "token", code = type(err) == "table" and err.code or nil })
        return finish(i, false, err)
      end
      t = now()
    end
    local s = free[#free]
    free[#free] = nil
    local ok, err = bt:start(s, path, tok, body_of(codes[i]), field)
    if not ok then   -- refused before any I/O (an argument error): final
      free[#free + 1] = s
      if tokens and type(err) == "table" then tokens.redact(err) end
      return finish(i, false, err)
    end
    attempts[i] = (attempts[i] or 0) + 1
    slots[s] = { i, t, tok, epoch }
    inflight = inflight + 1
    if interval then next_at = math_max(next_at or t, t) + interval end
  end

  local function loop()
    local poll = should_stop and _M.STOP_POLL or _M.POLL
    while true do
      if not stop and should_stop then
        local ok, yes = pcall(should_stop)
        if not ok or yes then halt("stopped") end
      end
      local t = now()
      local wake
      while not stop and inflight < window do
        local i
        i, wake = pick(t)
        if not i then break end
        start(i, t)
        t = now()
      end
      if inflight == 0 and (stop or not wake) then return end
      if inflight > 0 then
        local timeout = poll
        if wake and not stop then timeout = math_min(timeout, math_max(0, wake - now())) end
        local list = bt:wait(timeout)
        for k = 1, #list do settle(list[k]) end
      elseif wake then
        local dt = wake - now()
        if dt > 0 then sleep(should_stop and math_min(dt, poll) or dt) end
      end
    end
  end

  local ok, err = pcall(loop)
  bt:close()
  if not ok then error(err, 0) end
  if done < n then
    -- sent and waiting for another try: the last answer; never sent: not attempted
    local why = WHY[stop] or WHY.stopped
    for i = 1, n do
      if not results[i] then finish(i, false, last_err[i] or not_attempted(why)) end
    end
  end
  return results
end


return _M
