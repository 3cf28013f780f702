-- make bench-openresty compares like with like: its fairness check, run
-- in its quick mode (bench/openresty/run --check: no wrk, no timing), finds
-- both sides sending the same bytes, both answering true and both reusing
-- their upstream connection; and it fails when one of those is not so
-- (BENCH_BREAK makes the floor unfair on purpose). Never a timing figure.
local cjson = require "cjson"
local shell = require "spec.helpers.shell"
local q, capture, read = shell.q, shell.capture, shell.read

local CALLS = 20

-- bench/openresty/run --check in a directory of its own -> ok, the
-- results by phase, its output, the directory
local function check(env)
  local dir = capture("mktemp -d -t dingtalk-bench-or.XXXXXX"):gsub("%s+$", "")
  assert(dir ~= "", "mktemp failed")
  local out = dir .. "/run.log"
  local rc = os.execute((env or "") .. " BENCH_OR_OUT=" .. q(dir) .. " BENCH_OR_CHECK=" .. CALLS
    .. " bench/openresty/run --check >" .. q(out) .. " 2>&1")
  local results = {}
  for line in (read(dir .. "/results.tsv") or ""):gmatch("[^\n]+") do
    local phase, json = line:match("^(%S+)\t(.*)$")
    results[phase] = cjson.decode(json)
  end
  return rc == true or rc == 0, results, read(out) or "", dir
end

local function cleanup(dir)
  if dir and dir:match("^/tmp/dingtalk%-bench%-or%.") then os.execute("rm -rf " .. q(dir)) end
end

-- no process of the run left behind: nothing listens from its prefixes
local function leftovers(dir)
  return (capture("pgrep -af " .. q("[n]ginx -p " .. dir) .. " || true"):gsub("%s+$", ""))
end


describe("make bench-openresty's fairness check #nginx", function()
  setup(function()
    assert(io.open("build/luajit/dingtalk/core.so"),
           "build/luajit/dingtalk/core.so is missing: nginx loads the LuaJIT build")
  end)

  it("passes: the same request bytes, both answers true, one upstream connection each", function()
    local ok, r, out, dir = check()
    finally(function() cleanup(dir) end)
    assert.is_true(ok, out)
    assert.are.same({ identical = true, bytes = r.request.bytes, floor_answer = "true",
                      module_answer = "true" }, r.request)
    assert.are.same({ calls = CALLS, floor_true = CALLS, floor_conns = 1, floor_reqs = CALLS,
                      floor_max = CALLS, module_true = CALLS, module_conns = 1, module_reqs = CALLS,
                      module_max = CALLS }, r.keepalive)
    -- what both sent, line by line (the floor's copy; the module's is the same)
    local req = read(dir .. "/cap.1")
    assert.are.equal(req, read(dir .. "/cap.2"))
    assert.are.equal(#req, r.request.bytes)
    local head, body = req:match("^(.-\r\n)\r\n(.*)$")
    local lines = {}
    for l in head:gmatch("([^\r\n]*)\r\n") do lines[#lines + 1] = l end
    assert.are.equal("POST /v1.0/robot/plugins/clear HTTP/1.1", lines[1])
    assert.matches("^Host: 127%.0%.0%.1:%d+$", lines[2])
    assert.matches("^User%-Agent: lua%-dingtalk/", lines[3])
    assert.are.equal("x-acs-dingtalk-access-token: bench-token-0123456789abcdef01", lines[4])
    assert.are.equal("Content-Type: application/json", lines[5])
    assert.are.equal("Accept: application/json", lines[6])
    assert.are.equal("Content-Length: " .. #body, lines[7])
    assert.are.equal(7, #lines)
    assert.are.same({ robotCode = "dingbench" }, cjson.decode(body))
    assert.are.equal("", leftovers(dir))
  end)

  it("fails when the floor sends other bytes", function()
    local ok, r, out, dir = check("BENCH_BREAK=ua")
    finally(function() cleanup(dir) end)
    assert.is_false(ok, out)
    assert.is_false(r.request.identical)
    assert.matches("send different requests", out)
    assert.matches("fairness check FAILED", out)
    assert.are.equal("", leftovers(dir))
  end)

  it("fails when the floor does not reuse its upstream connection", function()
    local ok, r, out, dir = check("BENCH_BREAK=reuse")
    finally(function() cleanup(dir) end)
    assert.is_false(ok, out)
    assert.is_true(r.request.identical)
    assert.are.equal(CALLS, r.keepalive.floor_true)
    assert.are.equal(CALLS, r.keepalive.floor_conns)
    assert.are.equal(1, r.keepalive.module_conns)
    assert.matches("fairness check FAILED", out)
    assert.are.equal("", leftovers(dir))
  end)
end)
