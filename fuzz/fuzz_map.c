/*
** fuzz/fuzz_map.c: libFuzzer target for the response mapping (core.map).
**
** A standalone program: it embeds a Lua 5.4 state (liblua5.4 and
** lua-cjson linked statically, cjson preloaded) and the C core compiled
** from src/ with the sanitizers. The module itself never links liblua.
**
** Input layout (see fuzz/README.md; fuzz/mkcorpus.lua writes seeds):
**   [0..1]  status, big-endian u16: used as is when 100..999, else 100 + v % 900
**   [2]     flags: bit0 result_field "result" (else taken from the input),
**                  bit1 pass headers as numbers/garbage types too
**   then four fields, each one length byte and that many bytes:
**           x-acs-request-id, x-acs-trace-id, retry-after, secret
**           (a missing field or length 0 means absent)
**   rest    the body
**
** Per input core.map runs twice: (status, headers, body) and
** (status, headers, body, result_field, secret). Invariants, abort() on any
** violation:
**   - no Lua error, exactly two results: (true, value) or (nil, table);
**     with result_field "result" the value is a boolean, without any
**     result_field a table;
**   - the error table has kind "api", "http" or "protocol" (protocol only for
**     2xx, the others only for non-2xx), a non-empty string code, a string
**     message, an integer status equal to the input;
**   - every string field is valid UTF-8 without control bytes and of bounded
**     length, and so is tostring(err);
**   - a token-like secret (6+ bytes of [A-Za-z0-9_-] with a digit: nothing
**     in the module's own fixed text can form one) appears in no string
**     field and not in tostring(err).
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

int luaopen_dingtalk_core(lua_State *L);
int luaopen_cjson(lua_State *L);

static lua_State *L;
static int map_ref = LUA_NOREF;
static unsigned long runs;

#define FAIL(...)                                                     \
  do {                                                                \
    fprintf(stderr, "fuzz_map: invariant violated: " __VA_ARGS__);    \
    fputc('\n', stderr);                                              \
    abort();                                                          \
  } while (0)

/* Same rules as dt_error.c, written independently. */
static int valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t need, k;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else
      return 0;
    if (n - i < need || s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (k = 2; k < need; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    i += need;
  }
  return 1;
}

static int has_control(const unsigned char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] == 0x7F) return 1;
  return 0;
}

static int contains(const char *h, size_t hn, const char *n, size_t nn) {
  size_t i;
  if (nn == 0 || nn > hn) return 0;
  for (i = 0; i + nn <= hn; i++)
    if (memcmp(h + i, n, nn) == 0) return 1;
  return 0;
}

/* Token-like: the module must redact it wherever it shows up. */
static int token_like(const char *s, size_t n) {
  size_t i;
  int digit = 0;
  if (s == NULL || n < 6) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= '0' && c <= '9') digit = 1;
    else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'))
      return 0;
  }
  return digit;
}

static void check_text(const char *what, const char *s, size_t n, size_t max,
                       const char *secret, size_t slen) {
  if (!valid_utf8((const unsigned char *)s, n)) FAIL("%s is not valid UTF-8", what);
  if (has_control((const unsigned char *)s, n)) FAIL("%s has a control byte", what);
  if (n > max) FAIL("%s is %zu bytes long", what, n);
  if (token_like(secret, slen) && contains(s, n, secret, slen))
    FAIL("%s shows the secret", what);
}

/* The error table at index e. */
static void check_error(int e, long status, const char *secret, size_t slen) {
  const char *kind;
  size_t n;
  int two = status >= 200 && status <= 299;

  lua_getfield(L, e, "kind");
  if (lua_type(L, -1) != LUA_TSTRING) FAIL("kind is not a string");
  kind = lua_tostring(L, -1);
  if (two ? strcmp(kind, "protocol") != 0
          : (strcmp(kind, "api") != 0 && strcmp(kind, "http") != 0))
    FAIL("kind %s for status %ld", kind, status);
  lua_pop(L, 1);

  lua_getfield(L, e, "code");
  if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
    FAIL("code is not a non-empty string");
  lua_pop(L, 1);
  lua_getfield(L, e, "message");
  if (lua_type(L, -1) != LUA_TSTRING) FAIL("message is not a string");
  lua_pop(L, 1);
  lua_getfield(L, e, "status");
  if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) != status)
    FAIL("status field is not %ld", status);
  lua_pop(L, 1);
  lua_getfield(L, e, "retryable");
  if (!lua_isboolean(L, -1)) FAIL("retryable is not a boolean");
  lua_pop(L, 1);

  /* Every string field, whatever its name: cleaned, capped, redacted.
  ** Caps: 512 bytes of text (200 for the excerpt) plus "...". */
  lua_pushnil(L);
  while (lua_next(L, e)) {
    if (lua_type(L, -2) != LUA_TSTRING) FAIL("a non-string key in the error");
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *s = lua_tolstring(L, -1, &n);
      char what[64];
      snprintf(what, sizeof what, "field %.40s", lua_tostring(L, -2));
      check_text(what, s, n, strcmp(lua_tostring(L, -2), "excerpt") == 0 ? 203 : 515,
                 secret, slen);
    }
    lua_pop(L, 1);
  }

  /* tostring(err) goes through __tostring and must work. */
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, e);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) FAIL("tostring(err) raised: %s", lua_tostring(L, -1));
  if (lua_type(L, -1) != LUA_TSTRING) FAIL("tostring(err) is not a string");
  {
    const char *s = lua_tolstring(L, -1, &n);
    if (strncmp(s, "dingtalk: ", 10) != 0) FAIL("tostring(err) has no prefix: %s", s);
    check_text("tostring(err)", s, n, 4096, secret, slen);
  }
  lua_pop(L, 1);
}

/* core.map(status, headers, body [, field [, secret]]) and its checks. */
static void run(long status, int nargs, const char *field, const char *secret,
                size_t slen) {
  int base = lua_gettop(L);  /* the headers table and body sit at base-1, base */
  int ok;
  lua_rawgeti(L, LUA_REGISTRYINDEX, map_ref);
  lua_pushinteger(L, status);
  lua_pushvalue(L, base - 1);
  lua_pushvalue(L, base);
  if (nargs >= 4) lua_pushstring(L, field);
  if (nargs >= 5) {
    if (secret) lua_pushlstring(L, secret, slen);
    else lua_pushnil(L);
  }
  if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK)
    FAIL("core.map raised: %s", lua_tostring(L, -1));
  if (lua_gettop(L) != base + 2) FAIL("core.map returned %d values", lua_gettop(L) - base);
  ok = lua_toboolean(L, base + 1);
  if (ok) {
    if (!lua_isboolean(L, base + 1)) FAIL("first result is truthy but not true");
    if (nargs < 4 && !lua_istable(L, base + 2)) FAIL("result is not a table");
    if (nargs >= 4 && !lua_isboolean(L, base + 2))
      FAIL("result field %s is not a boolean", field);
    if (lua_isnil(L, base + 2)) FAIL("true with a nil result");
    if (status < 200 || status > 299) FAIL("success for status %ld", status);
  } else {
    if (!lua_isnil(L, base + 1)) FAIL("first result is neither true nor nil");
    if (!lua_istable(L, base + 2)) FAIL("error is not a table");
    check_error(base + 2, status, nargs >= 5 ? secret : NULL, slen);
  }
  lua_settop(L, base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  /* require "cjson" finds the statically linked one, whatever the cpath. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 1);
  luaL_requiref(L, "dingtalk.core", luaopen_dingtalk_core, 0);
  lua_getfield(L, -1, "map");
  if (!lua_isfunction(L, -1)) abort();
  map_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  return 0;
}

/* Next length-prefixed field; NULL (and *n 0) when absent or empty. */
static const char *take(const uint8_t **p, size_t *left, size_t *n) {
  size_t k;
  *n = 0;
  if (*left == 0) return NULL;
  k = **p;
  (*p)++;
  (*left)--;
  if (k > *left) k = *left;
  *n = k;
  {
    const char *s = (const char *)*p;
    *p += k;
    *left -= k;
    return k ? s : NULL;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const hnames[3] = {"x-acs-request-id", "x-acs-trace-id",
                                        "retry-after"};
  const uint8_t *p = data;
  size_t left = size, n, slen;
  unsigned v;
  long status;
  int flags, i, top = lua_gettop(L);
  const char *secret, *field;
  char fieldbuf[64];

  if (size < 3) return 0;
  v = ((unsigned)data[0] << 8) | data[1];
  status = (v >= 100 && v <= 999) ? (long)v : 100 + (long)(v % 900);
  flags = data[2];
  p += 3;
  left -= 3;

  lua_createtable(L, 0, 3);
  for (i = 0; i < 3; i++) {
    const char *h = take(&p, &left, &n);
    if (h == NULL) continue;
    if ((flags & 2) && i == 2 && n == 1)
      lua_pushinteger(L, h[0]);        /* a non-string header value */
    else
      lua_pushlstring(L, h, n);
    lua_setfield(L, -2, hnames[i]);
  }
  secret = take(&p, &left, &slen);
  lua_pushlstring(L, (const char *)p, left);      /* body */

  if (flags & 1) {
    field = "result";
  } else {
    /* A field name from the secret bytes: odd names must be safe too. */
    size_t k = slen < sizeof fieldbuf - 1 ? slen : sizeof fieldbuf - 1;
    if (k) memcpy(fieldbuf, secret, k);
    fieldbuf[k] = '\0';
    field = fieldbuf;
  }

  run(status, 3, NULL, NULL, 0);
  run(status, 5, field, secret, slen);
  run(status, 4, "result", NULL, 0);

  lua_settop(L, top);
  if (lua_gettop(L) != 0) FAIL("stack not balanced");
  if (++runs % 1024 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
