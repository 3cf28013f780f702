/*
** dt_map.c: status, headers and body into `true, result` or `nil, error`.
*/
#include <stdio.h>
#include <string.h>

#include "dt_map.h"

/* Server text kept in an error: enough to recognise, short enough to log. */
#define DT_TEXT_MAX 512
#define DT_EXCERPT_MAX 200
#define DT_INLINE_EXCERPT 80
/* Retry-After beyond any sane wait: kept large (never wrapped), as an
** integer every interpreter holds exactly. */
#define DT_RETRY_AFTER_MAX 2147483647L

/* Registry key (its address) of this state's private cjson.decode. */
static const char decode_key = 'd';

void dt_map_init(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "cjson");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_call(L, 0, 1);
  lua_pushlightuserdata(L, (void *)&decode_key);
  lua_getfield(L, -2, "decode");
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pop(L, 2);
}

/* Pushes the decoded body and returns 1, or pushes nothing and returns 0 on
** invalid JSON. Out of memory is not a verdict on the body: it propagates. */
static int decode(lua_State *L, const char *s, size_t len) {
  int rc;
  lua_pushlightuserdata(L, (void *)&decode_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushlstring(L, s, len);
  rc = lua_pcall(L, 1, 1, 0);
  if (rc == LUA_ERRMEM) lua_error(L);
  if (rc != 0) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static int blank(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
  return 1;
}

/* Moves the pair on top of the stack down to top+1, top+2 and drops what
** lay between (a decoded body). */
static int finish(lua_State *L, int top) {
  lua_insert(L, top + 1);
  lua_insert(L, top + 1);
  lua_settop(L, top + 2);
  return 2;
}

static const char *header(const char *h) { return (h && *h) ? h : NULL; }

/* Retry-After as delay-seconds (digits, optional blanks around them), or
** -1: the HTTP-date form and anything else is left out. Saturates instead
** of wrapping, however many digits. */
static long retry_after(const char *s) {
  long v = 0;
  int digits = 0;
  while (*s == ' ' || *s == '\t') s++;
  for (; *s >= '0' && *s <= '9'; s++) {
    long d = *s - '0';
    digits = 1;
    v = v > (DT_RETRY_AFTER_MAX - d) / 10 ? DT_RETRY_AFTER_MAX : v * 10 + d;
  }
  while (*s == ' ' || *s == '\t') s++;
  return digits && *s == '\0' ? v : -1;
}

/* Sets request_id from a header value: the whole value is redacted before
** the cap, so a cut cannot leave a piece of a secret. */
static void set_header_rid(lua_State *L, const char *rid, const dt_redactor *red) {
  char buf[DT_RID_MAX + 1];
  size_t n = dt_clean_rid_r(buf, rid, strlen(rid), red);
  lua_pushlstring(L, buf, n);
  lua_setfield(L, -2, "request_id");
}

/* Adds what every mapped error carries besides kind/code/message. */
static void add_context(lua_State *L, const dt_response *r, const dt_redactor *red) {
  const char *rid = header(r->request_id) ? r->request_id : header(r->trace_id);
  int has;
  lua_getfield(L, -1, "request_id");
  has = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has && rid) set_header_rid(L, rid, red);
  if (header(r->retry_after)) {
    long secs = retry_after(r->retry_after);
    if (secs >= 0) {
      lua_pushinteger(L, (lua_Integer)secs);
      lua_setfield(L, -2, "retry_after");
    }
  }
}

static void add_excerpt(lua_State *L, const dt_response *r, const dt_redactor *red) {
  if (r->len) dt_error_setclean_r(L, "excerpt", r->body, r->len, DT_EXCERPT_MAX, red);
}

/* Error for a 2xx answer that breaks the contract. */
static int protocol_error(lua_State *L, int top, const dt_response *r,
                          const dt_redactor *red, const char *code,
                          const char *message) {
  lua_pushnil(L);
  dt_error_push(L, "protocol", code, message, r->status, 0);
  add_excerpt(L, r, red);
  add_context(L, r, red);
  return finish(L, top);
}

/* Such a body maps to what the general path below makes of it, `true,
** <boolean>`, without a decode (a pcall, a table and its garbage on every
** call). */
int dt_map_exact(const dt_response *r) {
  size_t n = strlen(r->result_field);
  const char *b = r->body;
  if (r->len < n + 9 || b[0] != '{' || b[1] != '"' ||
      memcmp(b + 2, r->result_field, n) != 0 || b[n + 2] != '"' || b[n + 3] != ':')
    return -1;
  b += n + 4;
  if (r->len == n + 9 && memcmp(b, "true}", 5) == 0) return 1;
  if (r->len == n + 10 && memcmp(b, "false}", 6) == 0) return 0;
  return -1;
}

static const char *pick(lua_State *L, int t, const char *a, const char *b,
                        size_t *len);

/* The per-IP block (shared/api/rate-limits.md): not a platform error but
** a bare verdict, {"status":1111,"wait":<minutes>,"source":...,"punish":
** "deny","uuid":...}, whatever the HTTP status. Recognised by status 1111
** with a punish field. */
static int is_ip_block(lua_State *L, int t) {
  int yes;
  lua_getfield(L, t, "status");
  yes = (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING) &&
        lua_tonumber(L, -1) == 1111;
  lua_pop(L, 1);
  if (!yes) return 0;
  lua_getfield(L, t, "punish");
  yes = lua_type(L, -1) == LUA_TSTRING;
  lua_pop(L, 1);
  return yes;
}

/* The block lasts `wait` minutes; 5 when the verdict does not say. */
#define DT_IP_BLOCK_DEFAULT 300
static int map_ip_block(lua_State *L, int top, int t, const dt_response *r,
                        const dt_redactor *red) {
  char msg[128];
  long secs = DT_IP_BLOCK_DEFAULT;
  int e;
  lua_getfield(L, t, "wait");
  if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING) {
    lua_Number w = lua_tonumber(L, -1) * 60;
    if (w >= 1 && w < (lua_Number)DT_RETRY_AFTER_MAX) secs = (long)w;
    else if (w >= (lua_Number)DT_RETRY_AFTER_MAX) secs = DT_RETRY_AFTER_MAX;
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  dt_error_push(L, "http", "http.ip_blocked", NULL, r->status, 1);
  e = lua_gettop(L);
  snprintf(msg, sizeof msg,
           "HTTP %ld: the platform blocks calls from this IP address (status 1111) for %ld s",
           r->status, secs);
  lua_pushstring(L, msg);
  lua_setfield(L, e, "message");
  add_excerpt(L, r, red);
  add_context(L, r, red);
  /* the verdict's own length wins over any Retry-After */
  lua_pushinteger(L, (lua_Integer)secs);
  lua_setfield(L, e, "retry_after");
  lua_getfield(L, e, "request_id");
  if (lua_isnil(L, -1)) {
    size_t n;
    const char *uuid;
    lua_pop(L, 1);
    uuid = pick(L, t, "uuid", "requestid", &n);   /* stays on the stack */
    lua_pushvalue(L, e);
    if (uuid) dt_error_setclean_r(L, "request_id", uuid, n, DT_TEXT_MAX, red);
  }
  lua_settop(L, e);
  return finish(L, top);
}

static int map_success(lua_State *L, int top, const dt_response *r,
                       const dt_redactor *red) {
  int t;
  if (r->len == 0 || blank(r->body, r->len))
    return protocol_error(L, top, r, red, "protocol.empty", "empty response body");
  if (!decode(L, r->body, r->len))
    return protocol_error(L, top, r, red, "protocol.not_json", "response body is not JSON");
  t = lua_gettop(L);
  /* A scalar top level (1, "x", true, null) is valid JSON to cjson; check
  ** the type before indexing: lua_rawgeti on a non-table is undefined. */
  if (!lua_istable(L, t))
    return protocol_error(L, top, r, red, "protocol.not_object",
                          "response body is not a JSON object");
  lua_rawgeti(L, t, 1);
  if (!lua_isnil(L, -1))
    return protocol_error(L, top, r, red, "protocol.not_object",
                          "response body is not a JSON object");
  lua_pop(L, 1);
  if (is_ip_block(L, t)) return map_ip_block(L, top, t, r, red);
  if (r->result_field == NULL) {
    lua_pushboolean(L, 1);
    lua_pushvalue(L, t);
    return finish(L, top);
  }
  lua_getfield(L, t, r->result_field);
  if (lua_isnil(L, -1))
    return protocol_error(L, top, r, red, "protocol.no_result",
                          "response has no result field");
  if (!lua_isboolean(L, -1))
    return protocol_error(L, top, r, red, "protocol.bad_result",
                          "response result is not a boolean");
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return finish(L, top);
}

/* Replaces the number on top with its text: an integral value as its
** integer string on every interpreter (cjson gives floats on 5.3/5.4, where
** lua_tostring would say "40014.0"), any other as %.14g, as 5.1 prints it. */
static void number_to_text(lua_State *L) {
  char buf[64];
  lua_Number d = lua_tonumber(L, -1);
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, -1)) {
    lua_tostring(L, -1);               /* converts the slot in place */
    return;
  }
#endif
  /* Up to 2^53 every integer is exact; beyond, digits would be invented. */
  if (d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
      (lua_Number)(long long)d == d)
    snprintf(buf, sizeof buf, "%lld", (long long)d);
  else
    snprintf(buf, sizeof buf, "%.14g", (double)d);
  lua_pop(L, 1);
  lua_pushstring(L, buf);
}

/* Pushes field a, or else field b, of the table at t when it is a string
** or a number (codes and request ids come as either; a number as text, see
** number_to_text); otherwise pushes nil and returns NULL. */
static const char *pick(lua_State *L, int t, const char *a, const char *b,
                        size_t *len) {
  int i;
  const char *names[2];
  names[0] = a;
  names[1] = b;
  for (i = 0; i < 2; i++) {
    int ty;
    lua_getfield(L, t, names[i]);
    ty = lua_type(L, -1);
    if (ty == LUA_TSTRING || ty == LUA_TNUMBER) {
      const char *s;
      if (ty == LUA_TNUMBER) number_to_text(L);
      s = lua_tolstring(L, -1, len);
      if (*len) return s;
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  return NULL;
}

static int retryable_api(long status, const char *code) {
  /* Rate limits come back as 403 with these codes as often as 429. */
  return status >= 500 || status == 429 ||
         strncmp(code, "Forbidden.AccessDenied.Qps", 26) == 0;
}

/* Pushes a cleaned copy of the decoded JSON value at idx: strings cleaned
** and redacted like all server text, tables copied with the same care, at
** most DT_DETAIL_DEPTH deep and DT_DETAIL_ITEMS entries each; other values
** (numbers, booleans, cjson.null) as they are. */
#define DT_DETAIL_DEPTH 4
#define DT_DETAIL_ITEMS 64
static void clean_value(lua_State *L, int idx, int depth, const dt_redactor *red) {
  int type = lua_type(L, idx);
  if (type == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    dt_push_clean_r(L, s, n, DT_TEXT_MAX, red);
  } else if (type == LUA_TTABLE) {
    int items = 0, copy;
    if (depth >= DT_DETAIL_DEPTH) {
      lua_pushnil(L);
      return;
    }
    luaL_checkstack(L, 6, "dingtalk: copying accessdenieddetail");
    lua_newtable(L);
    copy = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) && items++ < DT_DETAIL_ITEMS) {
      int kv = lua_gettop(L);          /* key at kv - 1, value at kv */
      clean_value(L, kv - 1, depth + 1, red);
      clean_value(L, kv, depth + 1, red);
      if (!lua_isnil(L, -2)) lua_rawset(L, copy);
      else lua_pop(L, 2);
      lua_pop(L, 1);                   /* the value; the key stays for lua_next */
    }
    lua_settop(L, copy);
  } else {
    lua_pushvalue(L, idx);
  }
}

static int map_api(lua_State *L, int top, int t, const dt_response *r,
                   const dt_redactor *red) {
  size_t clen, mlen, rlen;
  const char *code = pick(L, t, "code", "Code", &clen);
  const char *msg = pick(L, t, "message", "Message", &mlen);
  const char *rid = pick(L, t, "requestid", "RequestId", &rlen);
  int e;
  if (rid == NULL) {
    lua_pop(L, 1);
    rid = pick(L, t, "requestId", "request_id", &rlen);
  }
  lua_pushnil(L);
  dt_error_push(L, "api", "", NULL, r->status, retryable_api(r->status, code));
  e = lua_gettop(L);
  dt_error_setclean_r(L, "code", code, clen, DT_TEXT_MAX, red);
  if (msg)
    dt_error_setclean_r(L, "message", msg, mlen, DT_TEXT_MAX, red);
  else {
    lua_pushstring(L, "(the platform gave no message)");
    lua_setfield(L, e, "message");
  }
  if (rid) dt_error_setclean_r(L, "request_id", rid, rlen, DT_TEXT_MAX, red);
  /* A 403 lists the scopes the app lacks: the one thing an operator needs. */
  lua_getfield(L, t, "accessdenieddetail");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, t, "accessDeniedDetail");
  }
  clean_value(L, lua_gettop(L), 0, red);   /* server text like the rest */
  lua_remove(L, -2);
  lua_setfield(L, e, "accessdenieddetail");
  add_context(L, r, red);
  return finish(L, top);
}

static const char *reason(long status) {
  switch (status) {
    case 301: case 302: case 303: case 307: case 308:
      return "redirect, not followed: the token is never sent elsewhere";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "unexpected status";
  }
}

static int map_http(lua_State *L, int top, const dt_response *r,
                    const dt_redactor *red) {
  char code[32], msg[96];
  snprintf(code, sizeof code, "http.%ld", r->status);
  snprintf(msg, sizeof msg, "HTTP %ld %s", r->status, reason(r->status));
  lua_pushnil(L);
  dt_error_push(L, "http", code, NULL, r->status,
                r->status >= 500 || r->status == 429);
  if (r->len) {
    /* The message gets a short excerpt too, so one log line says what the
    ** proxy or throttle page was. */
    lua_pushstring(L, msg);
    lua_pushstring(L, ": ");
    dt_push_clean_r(L, r->body, r->len, DT_INLINE_EXCERPT, red);
    lua_concat(L, 3);
  } else
    lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  add_excerpt(L, r, red);
  add_context(L, r, red);
  return finish(L, top);
}

/* A body that may be a JSON object: the first non-blank byte is "{". */
static int object_like(const dt_response *r) {
  size_t i;
  for (i = 0; i < r->len; i++) {
    char c = r->body[i];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return c == '{';
  }
  return 0;
}

int dt_map_push(lua_State *L, const dt_response *r) {
  int top = lua_gettop(L);
  dt_redactor red;                     /* one per response, on the C stack */
  int two = r->status >= 200 && r->status <= 299, t;
  luaL_checkstack(L, 12, "dingtalk: mapping a response");
  if (two && r->result_field && (t = dt_map_exact(r)) >= 0) {
    lua_pushboolean(L, 1);               /* the usual answer: no text to clean */
    lua_pushboolean(L, t);
    return 2;
  }
  dt_redactor_init(&red, &r->secrets);
  if (two) return map_success(L, top, r, &red);
  /* A platform error is a 4xx/5xx JSON object with a code; anything else
  ** is an HTTP-level failure (a proxy page, a throttle page, a redirect,
  ** whatever its body looks like). */
  if (r->len && !blank(r->body, r->len) && (r->status >= 400 || object_like(r)) &&
      decode(L, r->body, r->len)) {
    if (lua_istable(L, -1)) {
      size_t n;
      int t = lua_gettop(L);
      if (is_ip_block(L, t)) return map_ip_block(L, top, t, r, &red);
      if (r->status >= 400 && pick(L, t, "code", "Code", &n)) {
        lua_pop(L, 1);
        return map_api(L, top, t, r, &red);
      }
    }
  }
  lua_settop(L, top);
  return map_http(L, top, r, &red);
}
