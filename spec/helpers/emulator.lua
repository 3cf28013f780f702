-- Thin wrapper around emulator/control.lua for the specs:
--   local emulator = require "spec.helpers.emulator"
--   local h = emulator.start()      -- h.url, h.tls_url, h.cafile, ...
--   emulator.requests(h); emulator.reset(h); emulator.stop(h)
-- The repo root is found from this file's own path (busted runs from the root).

local source = debug.getinfo(1, "S").source
local file = source:match("^@(.*)$") or ""
local root = file:match("^(.-)/?spec/helpers/emulator%.lua$")
if not root or root == "" then root = "." end

return dofile(root .. "/emulator/control.lua")
