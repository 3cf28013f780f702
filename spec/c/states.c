/*
** states.c: several Lua states in one process, on two OS threads at once,
** each with several clients, all calling the emulator. Proves the core keeps
** no per-state data in C globals (only the once-only curl_global_init).
**
** usage: states URL CPATH LPATH CALLS   (prints "ok N" per state, exits 0)
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static const char *url, *cpath, *lpath;
static int calls;

/* Each state: two clients, alternating, robotCode varied by state so the
** emulator answers differ (true / false / an error) and get checked. */
static const char *script =
  "local url, calls, id = ...\n"
  "local dingtalk = require 'dingtalk'\n"
  "local a = dingtalk.new{ endpoint = url }\n"
  "local b = dingtalk.new{ endpoint = url }\n"
  "for i = 1, calls do\n"
  "  local c = (i % 2 == 0) and a or b\n"
  "  assert(c.robot.clear_plugins{ robotCode = 'dingbot-ok', token = 'tok-state-' .. id } == true)\n"
  "  assert(c.robot.clear_plugins{ robotCode = 'dingbot-false', token = 'tok-state-' .. id } == false)\n"
  "  local ok, err = pcall(c.robot.clear_plugins, { robotCode = 'dingbot-stopped', token = 'tok-x-' .. id })\n"
  "  assert(not ok and err.code == 'invalidRequest.robotIsStop', tostring(err))\n"
  "end\n"
  "a:close()\n"
  "return calls * 3\n";

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, cpath);
  lua_setfield(L, -2, "cpath");
  lua_pushstring(L, lpath);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  return L;
}

static int run(lua_State *L, int id) {
  if (luaL_loadstring(L, script) != LUA_OK) goto fail;
  lua_pushstring(L, url);
  lua_pushinteger(L, calls);
  lua_pushinteger(L, id);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) goto fail;
  printf("ok state %d: %d calls\n", id, (int)lua_tointeger(L, -1));
  lua_pop(L, 1);
  return 0;
fail:
  fprintf(stderr, "state %d: %s\n", id, lua_tostring(L, -1));
  return 1;
}

static void *thread_main(void *arg) {
  int id = (int)(size_t)arg, rc;
  lua_State *L = new_state();
  rc = run(L, id);
  lua_close(L);
  return (void *)(size_t)rc;
}

int main(int argc, char **argv) {
  pthread_t t[2];
  void *r0, *r1;
  lua_State *keep, *gone;
  int rc = 0;
  if (argc != 5) {
    fprintf(stderr, "usage: states URL CPATH LPATH CALLS\n");
    return 2;
  }
  url = argv[1]; cpath = argv[2]; lpath = argv[3]; calls = atoi(argv[4]);

  /* Two states on the main thread; closing one must not disturb the other. */
  keep = new_state();
  gone = new_state();
  rc |= run(keep, 1);
  rc |= run(gone, 2);
  lua_close(gone);
  rc |= run(keep, 3);

  /* Two more states on two threads at the same time. */
  pthread_create(&t[0], NULL, thread_main, (void *)(size_t)4);
  pthread_create(&t[1], NULL, thread_main, (void *)(size_t)5);
  pthread_join(t[0], &r0);
  pthread_join(t[1], &r1);
  rc |= (int)(size_t)r0 | (int)(size_t)r1;
  rc |= run(keep, 6);
  lua_close(keep);
  puts(rc ? "FAILED" : "all states ok");
  return rc;
}
