rockspec_format = "3.0"
package = "dingtalk"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/dingtalk-lua/dingtalk.git",
  tag = "v0.1.0",
}
description = {
  summary = "DingTalk Open API client for Lua and OpenResty, with a C core over libcurl",
  detailed = [[
    dingtalk.robot.clear_plugins{ robotCode = ..., token = ... } clears a
    single-chat bot's quick entries. The HTTP call and the mapping of answers
    and failures into structured error tables are done in C with libcurl;
    inside nginx (lua-nginx-module) calls go through non-blocking cosockets.
  ]],
  homepage = "https://github.com/dingtalk-lua/dingtalk",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  -- The core needs libcurl's headers and opens the library itself at
  -- require time (src/dt_curl.h). The check names the library: LuaRocks
  -- finds Debian's multiarch libcurl, and the compiler finds <curl/curl.h>
  -- on its own multiarch include path.
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["dingtalk.core"] = {
      sources = { "src/dt_core.c", "src/dt_curl.c", "src/dt_http.c", "src/dt_multi.c", "src/dt_map.c", "src/dt_error.c" },
      libraries = { "dl", "pthread" },
      incdirs = { "$(CURL_INCDIR)" },
    },
    -- lua/ is copied whole by the builtin backend; listed for the reader.
    ["dingtalk"] = "lua/dingtalk.lua",
    ["dingtalk.client"] = "lua/dingtalk/client.lua",
    ["dingtalk.robot"] = "lua/dingtalk/robot.lua",
    ["dingtalk.check"] = "lua/dingtalk/check.lua",
    ["dingtalk.retry"] = "lua/dingtalk/retry.lua",
    ["dingtalk.token"] = "lua/dingtalk/token.lua",
    ["dingtalk.cli"] = "lua/dingtalk/cli.lua",
    ["dingtalk.transport.ngx"] = "lua/dingtalk/transport/ngx.lua",
  },
  install = { bin = { dingtalk = "bin/dingtalk" } },
  copy_directories = { "examples" },
}
