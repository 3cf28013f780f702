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
  -- The Makefile builds the core into build/luarocks/<interpreter>/ and
  -- installs from there. The builtin backend compiled in the checkout
  -- (./dingtalk/core.so, src/*.o), where `./?.so` on the default cpath
  -- then loaded that build into every other interpreter ("undefined
  -- symbol: lua_newuserdatauv" on 5.3).
  type = "make",
  build_target = "luarocks-build",
  install_target = "luarocks-install",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA = "$(LUA)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_INCDIR = "$(CURL_INCDIR)",
  },
  install_variables = {
    LUA = "$(LUA)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
  install = { bin = { dingtalk = "bin/dingtalk" } },
  copy_directories = { "examples" },
}
