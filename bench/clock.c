/*
** bench/clock.c: benchclock, the two clocks bench/module.lua needs and
** plain Lua lacks, read the same way bench/floor.c reads them:
**   benchclock.now() -> CLOCK_MONOTONIC seconds (float)
**   benchclock.cpu() -> user + system CPU seconds of the process (getrusage)
** Built for the bench only (bench/out/<lua>/benchclock.so), never installed.
*/
#define _POSIX_C_SOURCE 200809L
#include <time.h>
#include <sys/resource.h>
#include <lua.h>
#include <lauxlib.h>

static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int l_cpu(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, (lua_Number)ru.ru_utime.tv_sec + (lua_Number)ru.ru_utime.tv_usec * 1e-6 +
                    (lua_Number)ru.ru_stime.tv_sec + (lua_Number)ru.ru_stime.tv_usec * 1e-6);
  return 1;
}

int luaopen_benchclock(lua_State *L);
__attribute__((visibility("default"))) int luaopen_benchclock(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_now);
  lua_setfield(L, -2, "now");
  lua_pushcfunction(L, l_cpu);
  lua_setfield(L, -2, "cpu");
  return 1;
}
