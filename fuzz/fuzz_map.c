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
**                  bit1 pass headers as numbers/garbage types too,
**                  bit2 straddle mode (below)
**   then four fields, each a length and that many bytes:
**           x-acs-request-id, x-acs-trace-id, retry-after, secret
**           (a length byte; 255 means a big-endian u16 length follows, so
**           header values of any length; a missing field or length 0 means
**           absent)
**   rest    the body
**
** Straddle mode: the secret is made token-like (its bytes mapped to
** [A-Za-z0-9_-], a digit every fourth byte), and the first 5 bytes of the
** rest choose a padding length (u16, up to 700) and its kind (ASCII, CJK,
** C1/bidi controls, invalid bytes), and a piece of the secret (start,
** length >= 8). "<padding><piece> end" then goes into every place server
** text reaches an error: code, message, requestid, accessdenieddetail keys
** and values (JSON), the HTML body, the request id and trace id headers, so
** the piece straddles the 80/127/200/512-byte caps as the input decides.
**
** Per input core.map runs four times: (status, headers, body);
** (..., result_field, secret); (..., "result"); (..., result_field, other,
** secret) with the secret second. Invariants, abort() on any violation:
**   - no Lua error, exactly two results: (true, value) or (nil, table);
**     with result_field "result" the value is a boolean, without any
**     result_field a table;
**   - the error table has kind "api" (only for status >= 400), "http"
**     (non-2xx) or "protocol" (2xx), a non-empty string code, a string
**     message, an integer status equal to the input;
**   - every string reachable from the error (fields, accessdenieddetail
**     keys and values at any depth) and tostring(err) is valid UTF-8
**     without C0/C1 controls, U+2028/9 or bidi controls, of bounded length
**     (a request id from a header at most 127 bytes);
**   - no 8-byte window of the secret made of [A-Za-z0-9_-] with a digit
**     (nothing in the module's own text can form one) in any of them;
**   - retry_after is absent unless the header is digits (blanks around
**     allowed), then the integer value saturated at 2^31-1.
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

/* A character that must not reach a log line: C0 and C1 controls, DEL,
** U+2028/9 and the bidi controls. s is valid UTF-8. */
static int has_control(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned long c = s[i];
    size_t k = 1, j;
    if (c >= 0xF0) { c &= 0x07; k = 4; }
    else if (c >= 0xE0) { c &= 0x0F; k = 3; }
    else if (c >= 0xC0) { c &= 0x1F; k = 2; }
    for (j = 1; j < k; j++) c = (c << 6) | (s[i + j] & 0x3F);
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x061C || c == 0x200E || c == 0x200F ||
        (c >= 0x2028 && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069))
      return 1;
    i += k;
  }
  return 0;
}

static int contains(const char *h, size_t hn, const char *n, size_t nn) {
  size_t i;
  if (nn == 0 || nn > hn) return 0;
  for (i = 0; i + nn <= hn; i++)
    if (memcmp(h + i, n, nn) == 0) return 1;
  return 0;
}

static int token_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

/* Token-like: [A-Za-z0-9_-] with a digit. Nothing the module writes itself
** forms such a run of 8, so one in the output came from the server. */
static int token_like(const char *s, size_t n) {
  size_t i;
  int digit = 0;
  if (s == NULL || n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= '0' && c <= '9') digit = 1;
    else if (!token_char(c)) return 0;
  }
  return digit;
}

/* The secret whose windows no output may hold (see check_text). */
static const char *g_secret;
static size_t g_slen;

static void check_text(const char *what, const char *s, size_t n, size_t max) {
  size_t i;
  if (!valid_utf8((const unsigned char *)s, n)) FAIL("%s is not valid UTF-8", what);
  if (has_control((const unsigned char *)s, n)) FAIL("%s has a control character", what);
  if (n > max) FAIL("%s is %zu bytes long", what, n);
  /* A whole secret of 6-7 bytes, and every 8-byte window of a longer one. */
  if (g_slen >= 6 && g_slen < 8 && token_like(g_secret, g_slen) && contains(s, n, g_secret, g_slen))
    FAIL("%s shows the secret", what);
  for (i = 0; g_slen >= 8 && i + 8 <= g_slen; i++)
    if (token_like(g_secret + i, 8) && contains(s, n, g_secret + i, 8))
      FAIL("%s shows 8 bytes of the secret (at %zu): %.*s", what, i, (int)(n > 600 ? 600 : n), s);
}

/* Every key and value of the table at t, at any depth (accessdenieddetail). */
static void check_nested(int t, int depth) {
  if (depth > 8) FAIL("accessdenieddetail deeper than 8");
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int k;
    for (k = -2; k <= -1; k++) {
      int ty = lua_type(L, k);
      if (ty == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, k, &n);
        check_text("accessdenieddetail text", s, n, 515);
      } else if (ty == LUA_TTABLE) {
        check_nested(lua_gettop(L) + k + 1, depth + 1);
      } else if (ty != LUA_TNUMBER && ty != LUA_TBOOLEAN && ty != LUA_TLIGHTUSERDATA) {
        FAIL("accessdenieddetail holds a %s", lua_typename(L, ty));
      }
    }
    lua_pop(L, 1);
  }
}

/* Retry-After as the mapping must read it, worked out independently: the
** value up to its first NUL (a C string from the headers table), digits with
** blanks around them, saturated at 2^31-1; -1 for anything else. */
static long expected_retry_after(const char *h, size_t n) {
  size_t i = 0, end;
  long v = 0;
  int digits = 0;
  if (h == NULL) return -1;
  for (end = 0; end < n && h[end] != '\0'; end++) {}
  while (i < end && (h[i] == ' ' || h[i] == '\t')) i++;
  for (; i < end && h[i] >= '0' && h[i] <= '9'; i++) {
    digits = 1;
    if (v <= 2147483647L) v = v * 10 + (h[i] - '0');
    if (v > 2147483647L) v = 2147483648L;       /* stays above the cap */
  }
  while (i < end && (h[i] == ' ' || h[i] == '\t')) i++;
  if (!digits || i != end) return -1;
  return v > 2147483647L ? 2147483647L : v;
}

/* The error table at index e. */
static void check_error(int e, long status, long retry_after) {
  const char *kind;
  size_t n;
  int two = status >= 200 && status <= 299, api;

  lua_getfield(L, e, "kind");
  if (lua_type(L, -1) != LUA_TSTRING) FAIL("kind is not a string");
  kind = lua_tostring(L, -1);
  api = strcmp(kind, "api") == 0;
  if (two ? strcmp(kind, "protocol") != 0
          : ((!api || status < 400) && strcmp(kind, "http") != 0))
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
  lua_getfield(L, e, "retry_after");
  if (retry_after < 0 ? !lua_isnil(L, -1)
                      : (!lua_isinteger(L, -1) || lua_tointeger(L, -1) != retry_after))
    FAIL("retry_after is %s, not %ld", luaL_tolstring(L, -1, NULL), retry_after);
  lua_settop(L, e);

  /* Every string field, whatever its name: cleaned, capped, redacted.
  ** Caps: 512 bytes of text (200 for the excerpt) plus "..."; a request id
  ** outside `api` errors comes from a header: 127 bytes in all. */
  lua_pushnil(L);
  while (lua_next(L, e)) {
    if (lua_type(L, -2) != LUA_TSTRING) FAIL("a non-string key in the error");
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2), *s = lua_tolstring(L, -1, &n);
      char what[64];
      size_t max = 515;
      if (strcmp(k, "excerpt") == 0) max = 203;
      else if (strcmp(k, "request_id") == 0 && !api) max = 127;
      snprintf(what, sizeof what, "field %.40s", k);
      check_text(what, s, n, max);
    } else if (lua_type(L, -1) == LUA_TTABLE) {
      if (strcmp(lua_tostring(L, -2), "accessdenieddetail") != 0)
        FAIL("a table in field %s", lua_tostring(L, -2));
      check_nested(lua_gettop(L), 0);
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
    check_text("tostring(err)", s, n, 4096);
  }
  lua_pop(L, 1);
}

/* core.map(status, headers, body [, field [, s1 [, s2]]]) and its checks;
** `secret` (may be NULL) is what no output may show. */
static void run(long status, int nargs, const char *field, const char *s1, size_t l1,
                const char *s2, size_t l2, const char *secret, size_t slen,
                long retry_after) {
  int base = lua_gettop(L);  /* the headers table and body sit at base-1, base */
  int ok;
  g_secret = secret;
  g_slen = secret ? slen : 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, map_ref);
  lua_pushinteger(L, status);
  lua_pushvalue(L, base - 1);
  lua_pushvalue(L, base);
  if (nargs >= 4) lua_pushstring(L, field);
  if (nargs >= 5) {
    if (s1) lua_pushlstring(L, s1, l1);
    else lua_pushnil(L);
  }
  if (nargs >= 6) {
    if (s2) lua_pushlstring(L, s2, l2);
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
    check_error(base + 2, status, retry_after);
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

/* Next length-prefixed field; NULL (and *n 0) when absent or empty. A
** length byte of 255 is followed by a big-endian u16 length. */
static const char *take(const uint8_t **p, size_t *left, size_t *n) {
  size_t k;
  *n = 0;
  if (*left == 0) return NULL;
  k = **p;
  (*p)++;
  (*left)--;
  if (k == 255 && *left >= 2) {
    k = ((size_t)(*p)[0] << 8) | (*p)[1];
    *p += 2;
    *left -= 2;
  }
  if (k > *left) k = *left;
  *n = k;
  {
    const char *s = (const char *)*p;
    *p += k;
    *left -= k;
    return k ? s : NULL;
  }
}

/* Straddle mode: see the comment at the top. */
#define SECRET_CAP 128
#define TEXT_CAP 8192
static char st_secret[SECRET_CAP];
static char st_text[TEXT_CAP];
static char st_json[8 * TEXT_CAP + 512];

/* A JSON string of s[0..n) at out (room for 6n + 2), returns its length. */
static size_t json_string(char *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, o = 0;
  out[o++] = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20) {
      memcpy(out + o, "\\u00", 4);
      out[o + 4] = hex[c >> 4];
      out[o + 5] = hex[c & 15];
      o += 6;
    } else
      out[o++] = (char)c;
  }
  out[o++] = '"';
  return o;
}

/* Builds the secret and the text; pushes the headers table and the body.
** Returns the secret's length. */
static size_t straddle(const uint8_t *p, size_t left, const char *raw, size_t rawn,
                       long status, int api) {
  static const char alphabet[] =
      "abcdefghijklmnopqrstuvwyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";   /* no 'x': the padding */
  static const char *const pads[] = {"x", "\xe4\xb8\xad", "\xc2\x85", "\xe2\x80\xae", "\xff", "\"",
                                     "\xc3\xa9"};
  size_t slen, i, o, pad, a, plen, tl;
  const char *pu;
  unsigned pk;
  uint8_t b[5] = {0, 0, 0, 0, 0};
  for (i = 0; i < 5 && i < left; i++) b[i] = p[i];
  /* the secret: 8..SECRET_CAP token bytes, a digit every fourth */
  slen = rawn < 8 ? 8 : (rawn > SECRET_CAP ? SECRET_CAP : rawn);
  for (i = 0; i < slen; i++) {
    unsigned char c = i < rawn ? (unsigned char)raw[i] : (unsigned char)(i * 7);
    st_secret[i] = (i % 4 == 3) ? (char)('0' + c % 10) : alphabet[c % (sizeof alphabet - 1)];
  }
  pad = (((size_t)b[0] << 8) | b[1]) % 701;
  pk = b[2] % (sizeof pads / sizeof pads[0]);
  a = b[3] % (slen - 7);                        /* a piece of at least 8 bytes */
  plen = 8 + b[4] % (slen - a - 7);
  pu = pads[pk];
  o = 0;
  while (o < pad) {                             /* whole units, >= pad bytes */
    memcpy(st_text + o, pu, strlen(pu));
    o += strlen(pu);
  }
  memcpy(st_text + o, st_secret + a, plen);
  o += plen;
  memcpy(st_text + o, " end", 4);
  tl = o + 4;

  lua_createtable(L, 0, 2);
  lua_pushlstring(L, st_text, tl);
  lua_setfield(L, -2, "x-acs-request-id");
  lua_pushlstring(L, st_text, tl);
  lua_setfield(L, -2, "x-acs-trace-id");
  if (api && status >= 400) {
    static char t[6 * TEXT_CAP + 2];
    size_t n = json_string(t, st_text, tl);
    o = 0;
#define PUT(str) (memcpy(st_json + o, (str), strlen(str)), o += strlen(str))
#define PUTT() (memcpy(st_json + o, t, n), o += n)
    PUT("{\"code\":"); PUTT();
    PUT(",\"message\":"); PUTT();
    PUT(",\"requestid\":"); PUTT();
    PUT(",\"accessdenieddetail\":{"); PUTT(); PUT(":"); PUTT();
    PUT(",\"list\":["); PUTT(); PUT(",{\"deeper\":"); PUTT(); PUT("}]}}");
#undef PUT
#undef PUTT
    lua_pushlstring(L, st_json, o);
  } else {
    lua_pushstring(L, "<html><body>upstream said: ");
    lua_pushlstring(L, st_text, tl);
    lua_pushstring(L, "</body></html>");
    lua_concat(L, 3);
  }
  return slen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const hnames[3] = {"x-acs-request-id", "x-acs-trace-id",
                                        "retry-after"};
  const uint8_t *p = data;
  size_t left = size, slen;
  unsigned v;
  long status, ra = -1;
  int flags, i, top = lua_gettop(L);
  const char *secret, *field, *h[3];
  size_t hn[3];
  char fieldbuf[64];

  if (size < 3) return 0;
  v = ((unsigned)data[0] << 8) | data[1];
  status = (v >= 100 && v <= 999) ? (long)v : 100 + (long)(v % 900);
  flags = data[2];
  p += 3;
  left -= 3;

  for (i = 0; i < 3; i++) h[i] = take(&p, &left, &hn[i]);
  secret = take(&p, &left, &slen);

  if (flags & 4) {
    /* The rest's first bytes shape the text; the secret's bytes its value. */
    slen = straddle(p, left, secret, slen, status, (flags & 8) == 0);
    secret = st_secret;
    if (h[2]) {                                  /* a Retry-After still */
      lua_pushlstring(L, h[2], hn[2]);
      lua_setfield(L, -3, "retry-after");
      ra = expected_retry_after(h[2], hn[2]);
    }
  } else {
    lua_createtable(L, 0, 3);
    for (i = 0; i < 3; i++) {
      if (h[i] == NULL) continue;
      if ((flags & 2) && i == 2 && hn[i] == 1) {
        lua_pushinteger(L, h[i][0]);        /* a non-string header value */
      } else {
        lua_pushlstring(L, h[i], hn[i]);
        if (i == 2) ra = expected_retry_after(h[i], hn[i]);
      }
      lua_setfield(L, -2, hnames[i]);
    }
    lua_pushlstring(L, (const char *)p, left);      /* body */
  }

  if (flags & 1) {
    field = "result";
  } else {
    /* A field name from the secret bytes: odd names must be safe too. */
    size_t k = slen < sizeof fieldbuf - 1 ? slen : sizeof fieldbuf - 1;
    if (k) memcpy(fieldbuf, secret, k);
    fieldbuf[k] = '\0';
    field = fieldbuf;
  }

  /* Without secrets the text is as the server sent it: nothing to check. */
  run(status, 3, NULL, NULL, 0, NULL, 0, NULL, 0, ra);
  run(status, 5, field, secret, slen, NULL, 0, secret, slen, ra);
  run(status, 4, "result", NULL, 0, NULL, 0, NULL, 0, ra);
  run(status, 6, field, "other-secret-0000", 17, secret, slen, secret, slen, ra);

  lua_settop(L, top);
  if (lua_gettop(L) != 0) FAIL("stack not balanced");
  if (++runs % 1024 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
