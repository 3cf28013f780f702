-- Every string reachable from a value (keys, values, nested tables and
-- their tostring), for specs that search errors for a secret.
local function strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "table" then
    if seen[v] then return out end
    seen[v] = true
    out[#out + 1] = tostring(v)
    for k, x in pairs(v) do
      strings(k, out, seen)
      strings(x, out, seen)
    end
  elseif v ~= nil then
    out[#out + 1] = tostring(v)
  end
  return out
end

-- The first string reachable from v that holds 8 or more bytes of secret
-- (the fragment the core promises never to show), and that 8-byte piece;
-- nil when there is none. v may be a list of strings too.
local function leak(v, secret)
  for _, s in ipairs(strings(v)) do
    for i = 1, #secret - 7 do
      local w = secret:sub(i, i + 7)
      if s:find(w, 1, true) then return s, w end
    end
  end
  return nil
end

return { strings = strings, leak = leak }
