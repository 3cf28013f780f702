/*
** oom.c: one failed allocation at every point of a call (the transfer
** done, the answer being mapped), for every N until the call needs fewer
** than N allocations. Each outcome must be `true, result`, `nil,
** transport.memory`, or a raised memory error when the failure came outside
** what the core protects; the NEXT call on the same client must succeed.
**
** usage: oom URL CPATH LPATH
** prints one line per case and "oom ok"; exits 0 when all held
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
#define LUA_OK 0
#endif

/* The n-th growing allocation after arm(n) fails. 5.2 and later collect
** garbage and try a failed allocation once more: that retry fails too, so
** the failure is one error where the allocation was asked for. Shrinking
** never fails: Lua relies on that. */
#if LUA_VERSION_NUM >= 502
#define BURST 2
#else
#define BURST 1
#endif
static long countdown = 0;
static int fired = 0, burst = 0;

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (ptr == NULL || nsize > osize) {
    if (burst > 0) {
      burst--;
      return NULL;
    }
    if (countdown > 0 && --countdown == 0) {
      fired = 1;
      burst = BURST - 1;
      return NULL;
    }
  }
  return realloc(ptr, nsize);
}

static int arm(lua_State *L) {
  fired = 0;
  burst = 0;
  countdown = (long)luaL_checknumber(L, 1);
  return 0;
}

/* -> whether the failure happened since arm() */
static int disarm(lua_State *L) {
  countdown = 0;
  lua_pushboolean(L, fired);
  return 1;
}

/* For each case: the path, the body, the result field, max_body, and
** what a successful mapping gives (the second result's type, or the code
** of the expected error). */
static const char *script =
  "local url, arm, disarm = ...\n"
  "local core = require 'dingtalk.core'\n"
  "local TOKEN = 'tok-oom-spec-0123456789'\n"
  "local cases = {\n"
  "  { 'result table', '/v1.0/robot/plugins/query', 'dingbot-ok', nil, nil, 'table' },\n"
  "  { 'api error', '/v1.0/robot/plugins/clear', 'fault-echo-pad-40', 'result', nil, 'param.illegal' },\n"
  "  { 'http error', '/v1.0/robot/plugins/clear', 'fault-echo-html-40', 'result', nil, 'http.502' },\n"
  "  { 'transport error', '/v1.0/robot/plugins/clear', 'fault-huge', 'result', 64, 'transport.too_large' },\n"
  "}\n"
  "local function expected(case, ok, a, b)\n"
  "  if not ok then return false end\n"
  "  if case[6] == 'table' then return a == true and type(b) == 'table' end\n"
  "  return a == nil and type(b) == 'table' and b.code == case[6]\n"
  "end\n"
  "local bad = 0\n"
  "for _, case in ipairs(cases) do\n"
  "  local c = assert(core.new_client{ max_body = case[5] })\n"
  "  local body = '{\"robotCode\":\"' .. case[3] .. '\"}'\n"
  "  local target = url .. case[2]\n"
  "  local tables, raised, n = 0, 0, 0\n"
  "  while true do\n"
  "    n = n + 1\n"
  "    arm(n)\n"
  "    local ok, a, b = pcall(core.post, c, target, TOKEN, body, case[4])\n"
  "    local hit = disarm()\n"
  "    if not hit then\n"
  "      if not expected(case, ok, a, b) then bad = bad + 1; print('  unexpected end', case[1]) end\n"
  "      break\n"
  "    end\n"
  "    if expected(case, ok, a, b) then\n"
  "    elseif ok and a == nil and type(b) == 'table' and b.code == 'transport.memory' and b.kind == 'transport' then\n"
  "      tables = tables + 1\n"
  "    elseif not ok and a == 'not enough memory' then\n"
  "      raised = raised + 1\n"
  "    else\n"
  "      bad = bad + 1\n"
  "      print('  N=' .. n .. ': ' .. tostring(ok) .. ' ' .. tostring(a) .. ' ' .. tostring(b and b.code or b))\n"
  "    end\n"
  "    local ok2, a2, b2 = pcall(core.post, c, target, TOKEN, body, case[4])\n"
  "    if not expected(case, ok2, a2, b2) then\n"
  "      bad = bad + 1\n"
  "      print('  after N=' .. n .. ': ' .. tostring(a2) .. ' ' .. tostring(b2 and b2.code or b2))\n"
  "    end\n"
  "  end\n"
  "  print(('case %s: %d allocations, %d memory errors as tables, %d raised'):format(case[1], n - 1, tables, raised))\n"
  "  c:close()\n"
  "end\n"
  "return bad\n";

int main(int argc, char **argv) {
  lua_State *L;
  int bad;
  if (argc != 4) {
    fprintf(stderr, "usage: oom URL CPATH LPATH\n");
    return 2;
  }
  L = lua_newstate(alloc, NULL);
  if (L == NULL) return 2;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, argv[2]);
  lua_setfield(L, -2, "cpath");
  lua_pushstring(L, argv[3]);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadstring(L, script) != LUA_OK) goto fail;
  lua_pushstring(L, argv[1]);
  lua_pushcfunction(L, arm);
  lua_pushcfunction(L, disarm);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) goto fail;
  bad = (int)lua_tonumber(L, -1);
  lua_close(L);
  puts(bad ? "FAILED" : "oom ok");
  return bad != 0;
fail:
  fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L);
  return 1;
}
