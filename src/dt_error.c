/*
** dt_error.c: building, cleaning and printing error tables.
*/
#include <string.h>

#include "dt_error.h"

/* A secret shorter than this cannot be told apart from ordinary text (real
** tokens are 32 characters); redacting it would shred every message. */
#define DT_SECRET_MIN 6

/* Length of a well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t need, i;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;        /* no overlong forms */
    if (c == 0xED) hi = 0x9F;        /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;        /* nothing past U+10FFFF */
  } else
    return 0;
  if (n < need) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (i = 2; i < need; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return need;
}

/* Length of the secret that starts at p (n bytes left), or 0. */
static size_t secret_at(const unsigned char *p, size_t n, const dt_secrets *secrets) {
  int k;
  if (secrets == NULL) return 0;
  for (k = 0; k < DT_SECRETS_MAX; k++) {
    size_t sl = secrets->len[k];
    if (secrets->s[k] && sl >= DT_SECRET_MIN && n >= sl && memcmp(p, secrets->s[k], sl) == 0)
      return sl;
  }
  return 0;
}

void dt_push_redacted(lua_State *L, const char *s, size_t len,
                      const dt_secrets *secrets) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, start = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (i < len) {
    size_t n = secret_at(p + i, len - i, secrets);
    if (n) {
      luaL_addlstring(&b, s + start, i - start);
      luaL_addstring(&b, "[redacted]");
      i += n;
      start = i;
    } else
      i++;
  }
  luaL_addlstring(&b, s + start, len - start);
  luaL_pushresult(&b);
}

size_t dt_clean(char *out, const char *s, size_t len, size_t max,
                const dt_secrets *secrets) {
  static const char redacted[] = "[redacted]";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, o = 0;
  if (max > DT_CLEAN_MAX) max = DT_CLEAN_MAX;
  while (i < len) {
    size_t n = secret_at(p + i, len - i, secrets);
    if (n) {
      if (o + sizeof redacted - 1 > max) {     /* the cap holds here too */
        memcpy(out + o, "...", 3);
        o += 3;
        break;
      }
      memcpy(out + o, redacted, sizeof redacted - 1);
      o += sizeof redacted - 1;
      i += n;
      continue;
    }
    n = utf8_len(p + i, len - i);
    if (o + (n ? n : 1) > max) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    if (n == 0) {                   /* a stray byte: keep the text printable */
      out[o++] = '?';
      n = 1;
    } else if (n == 1 && (p[i] < 0x20 || p[i] == 0x7F)) {
      out[o++] = ' ';               /* no CR/LF: one error, one log line */
    } else {
      memcpy(out + o, s + i, n);
      o += n;
    }
    i += n;
  }
  out[o] = '\0';
  return o;
}

void dt_push_clean(lua_State *L, const char *s, size_t len, size_t max,
                   const dt_secrets *secrets) {
  char buf[DT_CLEAN_MAX + DT_CLEAN_SLACK];
  size_t n = dt_clean(buf, s, len, max, secrets);
  lua_pushlstring(L, buf, n);
}

void dt_error_setclean(lua_State *L, const char *k, const char *s, size_t len,
                       size_t max, const dt_secrets *secrets) {
  dt_push_clean(L, s, len, max, secrets);
  lua_setfield(L, -2, k);
}

void dt_error_push(lua_State *L, const char *kind, const char *code,
                   const char *message, long status, int retryable) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  if (message) {
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
  }
  if (status) {
    lua_pushinteger(L, (lua_Integer)status);
    lua_setfield(L, -2, "status");
  }
  lua_pushboolean(L, retryable);
  lua_setfield(L, -2, "retryable");
  luaL_getmetatable(L, DT_ERROR_MT);
  lua_setmetatable(L, -2);
}

/* Field `k` of the table at 1 as text, or NULL. The value stays on the
** stack: a number converted by lua_tostring is owned by its stack slot. */
static const char *field(lua_State *L, const char *k) {
  lua_getfield(L, 1, k);
  return (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
             ? lua_tostring(L, -1) : NULL;
}

/* "dingtalk: CODE (HTTP 400): MESSAGE [request ID]" */
static int error_tostring(lua_State *L) {
  const char *code, *message, *status, *rid, *attempts;
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  code = field(L, "code");
  message = field(L, "message");
  status = field(L, "status");
  rid = field(L, "request_id");
  attempts = field(L, "attempts");
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "dingtalk: ");
  luaL_addstring(&b, code ? code : "error");
  if (status) {
    luaL_addstring(&b, " (HTTP ");
    luaL_addstring(&b, status);
    luaL_addchar(&b, ')');
  }
  if (message) {
    luaL_addstring(&b, ": ");
    luaL_addstring(&b, message);
  }
  if (rid) {
    luaL_addstring(&b, " [request ");
    luaL_addstring(&b, rid);
    luaL_addchar(&b, ']');
  }
  if (attempts && strcmp(attempts, "1") != 0) {
    luaL_addstring(&b, " after ");
    luaL_addstring(&b, attempts);
    luaL_addstring(&b, " attempts");
  }
  luaL_pushresult(&b);
  return 1;
}

void dt_error_init(lua_State *L) {
  luaL_newmetatable(L, DT_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
