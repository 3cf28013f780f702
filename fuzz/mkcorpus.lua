-- Writes the seed corpus of fuzz/fuzz_map.c into fuzz/corpus/map/.
-- usage: lua5.4 fuzz/mkcorpus.lua [dir]
-- Input layout: status (2 bytes, big-endian), flags (1 byte), then
-- request-id, trace-id, retry-after and secret, each as a length (one byte;
-- 255 then a big-endian u16 for longer ones) plus bytes, then the body.
-- flags bit0: result_field "result"; bit2: straddle mode (the body's first
-- 5 bytes: padding length u16, padding kind, piece start, piece length; see
-- fuzz_map.c); bit3 with bit2: an HTML body instead of a platform error.
local dir = arg[1] or "fuzz/corpus/map"

local function field(s)
  if #s < 255 then return string.char(#s) .. s end
  return string.char(255, #s >> 8, #s & 0xFF) .. s
end

local function input(t)
  return string.char(t.status >> 8, t.status & 0xFF, t.flags or 1)
      .. field(t.rid or "") .. field(t.trace or "") .. field(t.retry or "")
      .. field(t.secret or "") .. (t.body or "")
end

local TOKEN = "tok3n0123456789abcdef0123456789ab"
local RID = "5A2E1F7C-0B6D-4C1E-9F3A-1B2C3D4E5F60"

local seeds = {
  ["success-true"] = { status = 200, body = '{"result":true}' },
  ["success-false"] = { status = 200, body = '{"result":false}', rid = RID },
  ["success-no-field"] = { status = 200, flags = 0, secret = "result", body = '{"result":true}' },
  ["success-not-boolean"] = { status = 200, body = '{"result":"yes"}' },
  ["success-array"] = { status = 200, body = '[true]' },
  ["success-scalar"] = { status = 200, body = '1' },
  ["empty"] = { status = 200, body = '' },
  ["api-param-illegal"] = { status = 400, rid = RID, secret = TOKEN,
    body = '{"code":"param.illegal","message":"Parameter error","requestid":"' .. RID .. '"}' },
  ["api-capitalised"] = { status = 400, body = '{"Code":"invalidRequest.robotNotExist",'
    .. '"Message":"The bot does not exist","RequestId":"' .. RID .. '"}' },
  ["api-secret-in-message"] = { status = 401, secret = TOKEN,
    body = '{"code":"InvalidAuthentication","message":"token ' .. TOKEN .. ' is invalid"}' },
  ["api-denied"] = { status = 403, trace = "trace-1",
    body = '{"code":"Forbidden.AccessDenied.AccessTokenPermissionDenied","message":"no scope",'
      .. '"accessdenieddetail":{"requiredScopes":["qyapi_robot_sendmsg"]}}' },
  ["api-qps"] = { status = 403, retry = "2",
    body = '{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"qps","requestid":123}' },
  ["api-500"] = { status = 500, body = '{"code":"system.error","message":"System error"}' },
  ["http-502-html"] = { status = 502, retry = "Wed, 21 Oct 2015 07:28:00 GMT",
    body = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body>\r\n</html>\r\n' },
  ["http-429-empty"] = { status = 429, retry = "30", body = '' },
  ["http-302"] = { status = 302, body = 'moved' },
  ["deep-nesting"] = { status = 400, body = string.rep("[", 1200) .. string.rep("]", 1200) },
  ["invalid-utf8"] = { status = 400, rid = "id\r\n\xff\xfe",
    body = '{"code":"bad\xc0\xafcode","message":"m\xed\xa0\x80\x01\x7f\xf4\x90\x80\x80 \xe4\xb8\xad"}' },
  ["long-message"] = { status = 400, body = '{"code":"x","message":"' .. string.rep("\xe4\xb8\xad", 300) .. '"}' },
}

-- issue 10: the header path (request ids and Retry-After of any length)
seeds["header-rid-long"] = { status = 400, rid = ("R"):rep(1000), body = '{"code":"c"}' }
seeds["header-trace-long"] = { status = 502, trace = ("T"):rep(300), body = 'bad gateway' }
seeds["header-rid-secret-127"] = { status = 400, rid = ("x"):rep(110) .. TOKEN .. " end", secret = TOKEN,
  body = '{"code":"c","message":"m"}' }
seeds["header-rid-controls"] = { status = 400, rid = "r\xc2\x85\xe2\x80\xae\xe2\x81\xa6\0z", body = '{"code":"c"}' }
seeds["retry-after-huge"] = { status = 429, retry = "100000000000000000000000", body = '' }
seeds["retry-after-long"] = { status = 503, retry = ("9"):rep(600), body = '' }
seeds["retry-after-blanks"] = { status = 429, retry = " \t12 ", body = '' }
seeds["retry-after-signed"] = { status = 429, retry = "-5", body = '' }
seeds["retry-after-max"] = { status = 429, retry = "2147483648", body = '' }
seeds["api-numeric-code"] = { status = 400,
  body = '{"code":40014,"message":"invalid access_token","requestid":12345}' }
seeds["http-302-json"] = { status = 302, body = '{"code":"param.illegal","message":"moved"}' }
seeds["api-unicode-controls"] = { status = 400, body = '{"code":"param.illegal","message":"a\194\133b\194\155c'
  .. '\226\128\168d\226\128\169e\226\128\174f\226\129\166g","requestid":"rid-1"}' }
seeds["api-secret-pieces"] = { status = 400, secret = TOKEN,
  body = '{"code":"' .. TOKEN:sub(1, 8) .. '","message":"' .. ("x"):rep(500) .. TOKEN:sub(3, 20) .. '"}' }

-- straddle mode: a piece of the secret right across each cap
local function straddle(pad, kind, a, len)
  return string.char(pad >> 8, pad & 0xFF, kind, a, len)
end
for _, cap in ipairs{ 52, 80, 127, 172, 200, 512 } do
  for kind = 0, 1 do
    local pad = kind == 1 and (cap - 12) // 3 * 3 or cap - 12
    seeds[("straddle-api-%d-%d"):format(cap, kind)] = { status = 400, flags = 5, secret = TOKEN,
      body = straddle(pad, kind, 0, 255) }
    seeds[("straddle-html-%d-%d"):format(cap, kind)] = { status = 502, flags = 13, secret = TOKEN,
      body = straddle(pad, kind, 2, 20) }
  end
end

local names = {}
for name in pairs(seeds) do names[#names + 1] = name end
table.sort(names)
os.execute("mkdir -p '" .. dir .. "'")
for _, name in ipairs(names) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(input(seeds[name]))
  f:close()
end
print(#names .. " seeds in " .. dir)
