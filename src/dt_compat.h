/*
** dt_compat.h: the few Lua API differences between 5.1 (and LuaJIT) and
** 5.2-5.4 that the core meets. Prefixed names only: LuaJIT already exports
** some 5.2 functions (luaL_setfuncs, ...), and redefining those would clash.
*/
#ifndef DT_COMPAT_H
#define DT_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 502
#define dt_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define dt_rawlen(L, i) lua_rawlen((L), (i))
#else
/* luaL_register with a NULL name fills the table on top and makes no global. */
#define dt_setfuncs(L, l) luaL_register((L), NULL, (l))
#define dt_rawlen(L, i) lua_objlen((L), (i))
#endif

#define dt_newlib(L, l) (lua_newtable(L), dt_setfuncs((L), (l)))

#endif
