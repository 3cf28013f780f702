/*
** fork.c: a process that used its clients forks; parent and child then
** call at the same time on the same clients (plain http and TLS). Each must
** get its own answers, the child on connections of its own, and the
** parent's connections must survive the child (a child that only closes
** its clients included: libcurl's TLS cleanup would write on them).
**
** usage: fork URL TLS_URL CAFILE CPATH LPATH CALLS
** prints "ok parent" / "ok child" lines and "fork ok"; exits 0 when all held
*/
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* Globals of the script: `clients` (plain, tls) and run(who, calls), which
** makes `calls` rounds on both clients with the token of `who` and a
** robotCode whose answer tells parent and child apart. */
static const char *script =
  "local url, tls_url, cafile = ...\n"
  "local dingtalk = require 'dingtalk'\n"
  "clients = { dingtalk.new{ endpoint = url, retries = 0 },\n"
  "            dingtalk.new{ endpoint = tls_url, cafile = cafile, retries = 0 } }\n"
  "local expect = { parent = true, child = false }\n"
  "local code = { parent = 'dingbot-ok', child = 'dingbot-false' }\n"
  "function run(who, calls)\n"
  "  for i = 1, calls do\n"
  "    for _, c in ipairs(clients) do\n"
  "      local ok, r = pcall(c.robot.clear_plugins, { robotCode = code[who], token = 'tok-fork-' .. who })\n"
  "      if not ok then error(who .. ' call ' .. i .. ': ' .. tostring(r), 0) end\n"
  "      if r ~= expect[who] then error(who .. ' call ' .. i .. ' got the other answer', 0) end\n"
  "      local ok2, err = pcall(c.robot.clear_plugins, { robotCode = 'dingbot-stopped', token = 'tok-fork-' .. who })\n"
  "      if ok2 or err.code ~= 'invalidRequest.robotIsStop' then\n"
  "        error(who .. ' call ' .. i .. ': ' .. tostring(err), 0)\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "end\n";

static int call_run(lua_State *L, const char *who, int calls) {
  lua_getglobal(L, "run");
  lua_pushstring(L, who);
  lua_pushinteger(L, calls);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", who, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  printf("ok %s %d\n", who, calls);
  fflush(stdout);
  return 0;
}

static int wait_child(pid_t pid) {
  int status;
  if (waitpid(pid, &status, 0) != pid) return 1;
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv) {
  lua_State *L;
  pid_t pid;
  int rc = 0, calls;
  if (argc != 7) {
    fprintf(stderr, "usage: fork URL TLS_URL CAFILE CPATH LPATH CALLS\n");
    return 2;
  }
  calls = atoi(argv[6]);
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, argv[4]);
  lua_setfield(L, -2, "cpath");
  lua_pushstring(L, argv[5]);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadstring(L, script) != LUA_OK) goto fail;
  lua_pushstring(L, argv[1]);
  lua_pushstring(L, argv[2]);
  lua_pushstring(L, argv[3]);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) goto fail;
  /* both connections open and kept alive */
  rc |= call_run(L, "parent", 1);
  fflush(stdout);

  /* A child that only closes its clients and ends. */
  pid = fork();
  if (pid == 0) {
    lua_close(L);
    _exit(0);
  }
  rc |= pid < 0 || wait_child(pid);
  rc |= call_run(L, "parent", 1);

  /* Parent and child at the same time. */
  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    int crc = call_run(L, "child", calls);
    lua_close(L);
    _exit(crc);
  }
  rc |= pid < 0;
  rc |= call_run(L, "parent", calls);
  if (pid > 0) {
    int crc = wait_child(pid);
    if (crc) fprintf(stderr, "the child failed\n");
    rc |= crc;
  }
  /* the parent's connections outlive the child */
  rc |= call_run(L, "parent", 1);
  lua_close(L);
  puts(rc ? "FAILED" : "fork ok");
  return rc;
fail:
  fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L);
  return 1;
}
