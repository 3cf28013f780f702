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

return { strings = strings }
