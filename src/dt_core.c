/*
** dt_core.c: dingtalk.core, the Lua face of the C core.
**
** Owns the client userdata (a dt_http with its easy handle) and the Lua
** entry points. The rule that keeps it leak-free: check every argument
** first, then run the transfer (which allocates nothing that outlives it,
** and whatever it keeps belongs to the userdata, freed by __gc), and only
** then push results. No lua_State is kept anywhere.
*/
/* nanosleep and clock_gettime are POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "dt_compat.h"
#include "dt_curl.h"
#include "dt_error.h"
#include "dt_http.h"
#include "dt_map.h"
#include "dt_multi.h"
#include "dt_sha256.h"

#define DT_VERSION "0.1.0"
#define DT_CLIENT_MT "dingtalk.client"
#define DT_MULTI_MT "dingtalk.multi"

#if defined(_WIN32)
#define DT_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define DT_EXPORT __attribute__((visibility("default")))
#else
#define DT_EXPORT
#endif

typedef struct client {
  dt_http http;
  int open;
  int busy;                      /* inside post(): see client_close */
  unsigned long seq;             /* transfers made (client:last) */
  long last_status;              /* 0: the last transfer got no response */
  int watched;                   /* last() was called: keep request ids */
  /* The request id client:last() gives: cleaned, redacted and cut like the
  ** one in an error table, while the call's secrets are at hand. */
  size_t last_rid_len;           /* 0: the last answer had no request id */
  char last_rid[DT_RID_MAX + 1];
} client;

/* Pushes `nil, error` for a call the core refuses before any traffic. */
static int argument_error(lua_State *L, const char *code, const char *field,
                          const char *message) {
  lua_pushnil(L);
  dt_error_push(L, "argument", code, message, 0, 0);
  lua_pushstring(L, field);
  lua_setfield(L, -2, "field");
  return 2;
}

static long opt_long(lua_State *L, int t, const char *k, long def) {
  long v = def;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || n < 0 || n > 2147483647.0)
      luaL_error(L, "dingtalk.core: option %s must be a number in 0..2^31-1", k);
    v = (long)n;
  }
  lua_pop(L, 1);
  return v;
}

/* The string stays on the stack (and so alive) until the caller's return. */
static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) return NULL;
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "dingtalk.core: option %s must be a string", k);
  return lua_tostring(L, -1);
}

/* The options of core.new_client and core.multi; the strings stay on the
** stack until the caller returns. */
static void read_opts(lua_State *L, dt_http_opts *o) {
  luaL_checktype(L, 1, LUA_TTABLE);
  o->timeout_ms = opt_long(L, 1, "timeout", 10000);
  o->connect_timeout_ms = opt_long(L, 1, "connect_timeout", 5000);
  o->max_body = (size_t)opt_long(L, 1, "max_body", 1024 * 1024);
  o->cafile = opt_string(L, 1, "cafile");
  o->proxy = opt_string(L, 1, "proxy");
  o->user_agent = opt_string(L, 1, "user_agent");
  lua_getfield(L, 1, "direct");
  o->direct = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

/* core.new_client(opts) -> client | nil, error
** opts were checked by the Lua layer; the checks here only keep the C safe. */
static int core_new_client(lua_State *L) {
  dt_http_opts o;
  const char *fail;
  client *c;
  read_opts(L, &o);

  c = (client *)lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);           /* a valid, closed client for __gc */
  luaL_getmetatable(L, DT_CLIENT_MT);
  lua_setmetatable(L, -2);
  fail = dt_http_open(&c->http, &o);
  if (fail) {
    dt_http_close(&c->http);
    lua_pushnil(L);
    dt_error_push(L, "transport", "transport.init", fail, 0, 0);
    return 2;
  }
  c->open = 1;
  return 1;
}

static client *check_client(lua_State *L) {
  return (client *)luaL_checkudata(L, 1, DT_CLIENT_MT);
}

/* Eight bytes at a time: every call checks its token and robot code. The
** tests are exact for "some byte of w is": below 0x20, 0x7F, above 0x7E
** (bit twiddling: a borrow or carry into a byte's top bit). */
#define DT_ONES UINT64_C(0x0101010101010101)
#define DT_HIGH UINT64_C(0x8080808080808080)
#define DT_BELOW_20(w) (((w) - DT_ONES * 0x20) & ~(w) & DT_HIGH)
#define DT_IS_7F(w) ((((w) ^ (DT_ONES * 0x7F)) - DT_ONES) & ~((w) ^ (DT_ONES * 0x7F)) & DT_HIGH)
#define DT_ABOVE_7E(w) ((((w) + DT_ONES * (127 - 0x7E)) | (w)) & DT_HIGH)

/* Whether s[0..len) holds a control character (below 0x20, or 0x7F);
** printable: also whether it holds anything above 0x7E. */
static int any_outside(const char *s, size_t len, int printable) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    if (DT_BELOW_20(w) || (printable ? DT_ABOVE_7E(w) : DT_IS_7F(w))) return 1;
  }
  for (; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7F || (printable && ch > 0x7E)) return 1;
  }
  return 0;
}

/* The token checks of every call that sends one: `nil, error` pushed
** (returns 2) or 0 when the token is fine. */
static int check_token(lua_State *L, const char *token, size_t tlen) {
  if (token != NULL && (tlen == 0 || tlen > DT_TOKEN_MAX))
    return argument_error(L, "argument.token", "token",
                          "token must be 1 to 1024 bytes");
  /* Last line of defence: a CR/LF here would inject headers. */
  if (any_outside(token, tlen, 0))
    return argument_error(L, "argument.control_char", "token",
                          "token contains a control character");
  return 0;
}

/* What push_outcome turns into results. */
typedef struct outcome {
  const dt_http_result *res;
  const dt_response *r;
  const dt_secrets *sec;
} outcome;

/* Pushes `true, result` or `nil, error` for the transfer just made. Run
** under lua_pcall (see client_post): every allocation here may fail or run
** finalizers, and neither may leave the client busy. */
static int push_outcome(lua_State *L) {
  const outcome *o = (const outcome *)lua_touserdata(L, 1);
  if (o->res->code) {
    lua_pushnil(L);
    dt_error_push(L, "transport", o->res->code, NULL, 0, o->res->retryable);
    dt_error_setclean(L, "message", o->res->message, strlen(o->res->message), 512, o->sec);
    return 2;
  }
  return dt_map_push(L, o->r);
}

/* Whether a failed pcall failed for memory. Before 5.4, a memory error
** that C code caught and raised again (lua_error, as the mapping does
** around its JSON decoder) comes back as LUA_ERRRUN with Lua's message. */
static int memory_error(lua_State *L, int rc) {
  return rc == LUA_ERRMEM ||
         (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "not enough memory") == 0);
}

/* Copies the answer's request id for client:last(), redacted while the
** secrets are at hand: the token is gone once post() returns. Only for a
** client whose last() is used (an on_request hook asks before every
** attempt): the redaction scan is the dearest part of a plain call. */
static void keep_request_id(client *c, const dt_secrets *sec) {
  const char *rid = c->http.hdr.request_id[0] ? c->http.hdr.request_id
                                              : c->http.hdr.trace_id;
  c->last_rid_len = 0;
  if (c->watched && c->last_status && rid[0])
    c->last_rid_len = dt_clean_rid(c->last_rid, rid, strlen(rid), sec);
}

/* The transfer and its results, for client:post and the clear closure:
** pushes `true, result` or `nil, error` and returns 2. The token has been
** checked (check_token, or printable). Upvalue 1 of the caller:
** push_outcome, made once at luaopen so that nothing is allocated between
** the transfer and the protected call. */
static int do_post(lua_State *L, client *c, const char *url, const char *token, size_t tlen,
                   const char *body, size_t blen, const char *field, int method, int once,
                   const char *secret, size_t slen) {
  dt_secrets sec;
  dt_http_result res;
  dt_response r;
  outcome o;
  int rc;

  if (!c->open)
    return argument_error(L, "argument.closed", "client", "the client is closed");
  if (c->busy)                       /* post() from a finalizer run inside post() */
    return argument_error(L, "argument.busy", "client",
                          "the client is in the middle of another call");
  sec.s[0] = token;
  sec.len[0] = tlen;
  sec.s[1] = secret;
  sec.len[1] = slen;
  dt_http_method(&c->http, method);
  dt_http_post(&c->http, url, token, tlen, body, blen, once, &res);
  c->seq++;
  c->last_status = res.code ? 0 : res.status;
  keep_request_id(c, &sec);

  r.status = res.status;
  r.body = c->http.body ? c->http.body : "";
  r.len = c->http.len;
  r.result_field = field;
  /* The usual answer maps to two booleans, as dt_map_push would map it:
  ** pushing them allocates nothing (a C function has LUA_MINSTACK slots),
  ** so no protected call. */
  if (!res.code && res.status >= 200 && res.status <= 299 && field) {
    int t = dt_map_exact(&r);
    if (t >= 0) {
      dt_http_trim(&c->http);
      lua_pushboolean(L, 1);
      lua_pushboolean(L, t);
      return 2;
    }
  }
  r.request_id = c->http.hdr.request_id;
  r.trace_id = c->http.hdr.trace_id;
  r.retry_after = c->http.hdr.retry_after;
  r.secrets = sec;
  o.res = &res;
  o.r = &r;
  o.sec = &sec;
  /* Pushing results allocates, and any allocation may fail or run
  ** finalizers: busy makes a close() or __gc from one of those wait for
  ** the end of post(), and the protected call makes an out-of-memory an
  ** error table instead of an escape that would leave the client busy. */
  c->busy = 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, &o);
  rc = lua_pcall(L, 1, 2, 0);
  c->busy = 0;
  if (!c->open) dt_http_close(&c->http);   /* a close() that came meanwhile */
  else dt_http_trim(&c->http);
  if (rc == 0) return 2;
  if (!memory_error(L, rc)) return lua_error(L);   /* a finalizer's (5.1-5.3) */
  lua_pop(L, 1);
  lua_pushnil(L);
  /* If even this fails, the memory error is raised: nothing is held. */
  dt_error_push(L, "transport", "transport.memory",
                "out of memory while reading the answer", 0, 0);
  return 2;
}

/* client:post(url, token, body [, result_field [, method [, once [, secret]]]])
**   -> true, result | nil, error   (method: POST, the default, GET, PUT, DELETE, PATCH)
** token nil: no access-token header (the token call itself). once true: the
** request goes on the wire at most once (no transparent re-send). secret: a
** second secret (the app secret) taken out of every text the server sent.
** Upvalue 1: push_outcome. */
static int client_post(lua_State *L) {
  client *c = check_client(L);
  size_t tlen = 0, blen;
  const char *url = luaL_checkstring(L, 2);
  const char *token = lua_isnil(L, 3) ? NULL : luaL_checklstring(L, 3, &tlen);
  const char *body = luaL_checklstring(L, 4, &blen);
  const char *field = luaL_optstring(L, 5, NULL);
  static const char *const methods[] = {"POST", "GET", "PUT", "DELETE", "PATCH", NULL};
  int method = lua_isnoneornil(L, 6) ? DT_POST : luaL_checkoption(L, 6, NULL, methods);
  int once = lua_toboolean(L, 7);
  size_t slen = 0;
  const char *secret = luaL_optlstring(L, 8, NULL, &slen);
  int rc;

  if (c->open && !c->busy && (rc = check_token(L, token, tlen)) != 0) return rc;
  lua_settop(L, 8);                  /* the two slots do_post pushes are free */
  return do_post(L, c, url, token, tlen, body, blen, field, method, once, secret, slen);
}

/* The longest robot code the clear closure takes (robot.lua's limit). */
#define DT_CODE_MAX 256

/* What a clear closure keeps in C, in one userdata upvalue: one lookup
** per call instead of one per value. url points into upvalue 3, which
** keeps the string alive; c into upvalue 2 (the client userdata). */
typedef struct clear_fast {
  client *c;
  const char *url;
  int once;
} clear_fast;

/* f(args) or f(bound, args): see core_clear_closure. Upvalues: 1
** push_outcome, 2 the client, 3 the URL, 4 the clear_fast, 5 bound,
** 6 "robotCode", 7 "token", 8 slow, 9 after. */
static int clear_call(lua_State *L) {
  static const char head[] = "{\"robotCode\":\"";
  const clear_fast *f = (const clear_fast *)lua_touserdata(L, lua_upvalueindex(4));
  int t = lua_type(L, 2) == LUA_TTABLE && lua_rawequal(L, 1, lua_upvalueindex(5)) ? 2 : 1;
  char body[sizeof head + DT_CODE_MAX + 2];
  const char *code, *token;
  size_t clen, tlen, blen, i;

  lua_settop(L, 2);
  if (lua_type(L, t) != LUA_TTABLE) goto slow;
  /* the two keys and nothing else, their values kept on the way */
  lua_pushnil(L);                    /* 3: robotCode */
  lua_pushnil(L);                    /* 4: token */
  lua_pushnil(L);
  while (lua_next(L, t)) {           /* 5: key, 6: value */
    if (lua_rawequal(L, 5, lua_upvalueindex(6))) lua_replace(L, 3);
    else if (lua_rawequal(L, 5, lua_upvalueindex(7))) lua_replace(L, 4);
    else goto slow;
  }
  if (lua_type(L, 3) != LUA_TSTRING || lua_type(L, 4) != LUA_TSTRING) goto slow;
  code = lua_tolstring(L, 3, &clen);
  token = lua_tolstring(L, 4, &tlen);
  if (clen == 0 || clen > DT_CODE_MAX || tlen == 0 || tlen > DT_TOKEN_MAX ||
      any_outside(code, clen, 1) || any_outside(token, tlen, 1))
    goto slow;
  /* the body cjson makes, for a code JSON leaves as it is */
  for (i = 0; i < clen; i++)
    if (code[i] == '"' || code[i] == '\\' || code[i] == '/') goto slow;
  memcpy(body, head, sizeof head - 1);
  memcpy(body + sizeof head - 1, code, clen);
  blen = sizeof head - 1 + clen;
  body[blen++] = '"';
  body[blen++] = '}';
  do_post(L, f->c, f->url, token, tlen, body, blen, "result", DT_POST, f->once, NULL, 0);  /* 5, 6 */
  if (lua_toboolean(L, 5)) return 1;
  /* a failed attempt: the retry loop goes on from its error */
  lua_pushvalue(L, lua_upvalueindex(9));
  lua_pushvalue(L, 4);
  lua_pushlstring(L, body, blen);
  lua_pushvalue(L, 6);
  lua_call(L, 3, LUA_MULTRET);
  return lua_gettop(L) - 6;
slow:
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(8));
  lua_insert(L, 1);
  lua_call(L, 2, LUA_MULTRET);
  return lua_gettop(L);
}

/* core.clear_closure(client, url, once, bound, slow, after) -> f
** robot.clear_plugins of a client on libcurl with neither an on_request
** hook nor a token manager, as one C function, for the usual call: f(args)
** or f(bound, args) with args a table of robotCode (1..256 bytes) and token
** (1..1024) only, both printable ASCII, the code without a character JSON
** escapes. It makes the body and the POST to url (once: at most once on
** the wire) and returns the result. Anything else goes to Lua: other
** arguments to slow(a, b) (the full checks; nothing was sent), a failed
** attempt to after(token, body, error) (the retry loop from that
** attempt's error), and f returns what they return. */
static int core_clear_closure(lua_State *L) {
  client *c = check_client(L);
  const char *url = luaL_checkstring(L, 2);
  clear_fast *f;
  luaL_checktype(L, 4, LUA_TTABLE);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  luaL_checktype(L, 6, LUA_TFUNCTION);
  f = (clear_fast *)lua_newuserdata(L, sizeof *f);    /* 7 */
  f->c = c;
  f->url = url;
  f->once = lua_toboolean(L, 3);
  lua_pushcfunction(L, push_outcome);  /* 1 */
  lua_pushvalue(L, 1);                 /* 2 */
  lua_pushvalue(L, 2);                 /* 3 */
  lua_pushvalue(L, 7);                 /* 4 */
  lua_pushvalue(L, 4);                 /* 5 */
  lua_pushliteral(L, "robotCode");     /* 6 */
  lua_pushliteral(L, "token");         /* 7 */
  lua_pushvalue(L, 5);                 /* 8 */
  lua_pushvalue(L, 6);                 /* 9 */
  lua_pushcclosure(L, clear_call, 9);
  return 1;
}

/* client:last() -> seq, status, request_id: what the last transfer got
** (status 0 and no request id when it got no response). For on_request
** hooks, which want the status and request id of successes too. The
** request id (cleaned, redacted, cut like an error's) is kept for the
** transfers made after the first last() on the client. */
static int client_last(lua_State *L) {
  client *c = check_client(L);
  c->watched = 1;
  lua_pushnumber(L, (lua_Number)c->seq);
  lua_pushinteger(L, (lua_Integer)c->last_status);
  if (c->last_rid_len) lua_pushlstring(L, c->last_rid, c->last_rid_len);
  else lua_pushnil(L);
  return 3;
}

/* Pushing results allocates, and any allocation may run finalizers: one
** that closes this client (a wrapper's __gc, say) would free the response
** buffer that post() is still reading. While post() is busy, close() only
** marks the client closed and post() frees on its way out. */
static int client_close(lua_State *L) {
  client *c = check_client(L);
  c->open = 0;
  if (!c->busy) dt_http_close(&c->http);
  return 0;
}

/* __gc: run by the collector the client is unreachable, but a finalizer
** can still reach __gc by hand (debug.getmetatable) while post() runs on
** the client: then it waits, like close(). */
static int client_gc(lua_State *L) {
  return client_close(L);
}

static int client_tostring(lua_State *L) {
  client *c = check_client(L);
  lua_pushfstring(L, "dingtalk.client (%s): %p", c->open ? "open" : "closed",
                  (void *)c);
  return 1;
}

/* ---- core.multi: n transfers at once (dt_multi) ---- */

/* Each multi's user value is a table with, for slot i (0-based), the token,
** the secret and the result field of its transfer at 3i+1, 3i+2, 3i+3:
** the strings stay alive (held by Lua, not copied into C) until the result
** is mapped and redacted with them. Made with room for all 3n entries, so
** setting one never allocates. */
#if LUA_VERSION_NUM >= 504
#define dt_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 1)
#define dt_setuservalue(L, i) lua_setiuservalue((L), (i), 1)
#define dt_getuservalue(L, i) lua_getiuservalue((L), (i), 1)
#elif LUA_VERSION_NUM >= 502
#define dt_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define dt_setuservalue(L, i) lua_setuservalue((L), (i))
#define dt_getuservalue(L, i) lua_getuservalue((L), (i))
#else
#define dt_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define dt_setuservalue(L, i) lua_setfenv((L), (i))
#define dt_getuservalue(L, i) lua_getfenv((L), (i))
#endif

typedef struct multi {
  dt_multi *m;                   /* NULL: closed (or never opened) */
  int open;
  int busy;                      /* inside wait(): see multi_close */
} multi;

/* SIGINT: the handler only sets this flag; m:wait looks at it. */
static volatile sig_atomic_t interrupted;
static struct sigaction old_sigint;
static int sigint_on;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static multi *check_multi(lua_State *L) {
  return (multi *)luaL_checkudata(L, 1, DT_MULTI_MT);
}

/* core.multi(opts, n) -> m | nil, error: n slots (1..256), opts as for
** core.new_client. */
static int core_multi(lua_State *L) {
  dt_http_opts o;
  const char *fail;
  multi *mu;
  lua_Integer n;
  read_opts(L, &o);
  n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1 && n <= DT_MULTI_MAX, 2, "slots must be 1..256");
  mu = (multi *)dt_newuserdata(L, sizeof *mu);
  memset(mu, 0, sizeof *mu);         /* a valid, closed multi for __gc */
  luaL_getmetatable(L, DT_MULTI_MT);
  lua_setmetatable(L, -2);
  lua_createtable(L, 3 * (int)n, 0);
  dt_setuservalue(L, -2);
  fail = dt_multi_open(&mu->m, &o, (int)n);
  if (fail) {
    dt_multi_close(mu->m);
    mu->m = NULL;
    lua_pushnil(L);
    dt_error_push(L, "transport", "transport.init", fail, 0, 0);
    return 2;
  }
  mu->open = 1;
  return 1;
}

/* m:start(slot, url, token, body [, result_field [, secret]]) -> true | nil, error
** Starts a POST on a free slot (1..n); token nil: no access-token header.
** Argument errors as client:post, before any traffic. */
static int multi_start(lua_State *L) {
  multi *mu = check_multi(L);
  lua_Number slot = luaL_checknumber(L, 2);
  const char *url = luaL_checkstring(L, 3);
  size_t tlen = 0, blen;
  const char *token = lua_isnil(L, 4) ? NULL : luaL_checklstring(L, 4, &tlen);
  const char *body = luaL_checklstring(L, 5, &blen);
  int s, rc;
  (void)luaL_optstring(L, 6, NULL);
  (void)luaL_optstring(L, 7, NULL);  /* a number becomes its string, in place */
  if (!mu->open)
    return argument_error(L, "argument.closed", "multi", "the batch is closed");
  if (mu->busy)                      /* start() from a finalizer run inside wait() */
    return argument_error(L, "argument.busy", "multi",
                          "the batch is in the middle of wait()");
  if (!(slot >= 1 && slot <= mu->m->n) || slot != (lua_Number)(int)slot)
    return argument_error(L, "argument.slot", "slot", "slot must be an integer in 1..n");
  s = (int)slot - 1;
  if (mu->m->slots[s].state != DT_SLOT_FREE)
    return argument_error(L, "argument.busy", "slot",
                          "the slot has a transfer whose result wait() has not given");
  if ((rc = check_token(L, token, tlen)) != 0) return rc;
  lua_settop(L, 7);
  dt_getuservalue(L, 1);             /* 8 */
  lua_pushvalue(L, 4);
  lua_rawseti(L, 8, 3 * s + 1);
  lua_pushvalue(L, 7);
  lua_rawseti(L, 8, 3 * s + 2);
  lua_pushvalue(L, 6);
  lua_rawseti(L, 8, 3 * s + 3);
  dt_multi_start(mu->m, s, url, token, tlen, body, blen);
  lua_pushboolean(L, 1);
  return 1;
}

/* The text at index i when it is a string, else NULL (length 0). */
static const char *string_at(lua_State *L, int i, size_t *len) {
  *len = 0;
  return lua_type(L, i) == LUA_TSTRING ? lua_tolstring(L, i, len) : NULL;
}

/* Pushes the array of finished slots: { slot = i, ok = true, result = r,
** request_id = id } or { slot = i, ok = false, error = e }, mapped as
** client:post maps (the id cleaned and redacted like an error's). Run
** under lua_pcall by multi_wait (see client_post for why); reads only. */
static int push_finished(lua_State *L) {
  dt_multi *m = (dt_multi *)lua_touserdata(L, 1);
  int i, k = 0;
  luaL_checkstack(L, 12, "dingtalk: the results of a batch");
  lua_settop(L, 2);                  /* 2: the anchors */
  lua_createtable(L, m->done, 0);    /* 3 */
  for (i = 0; i < m->n; i++) {
    dt_multi_slot *sl = &m->slots[i];
    dt_secrets sec;
    dt_response r;
    size_t flen;
    if (sl->state != DT_SLOT_DONE) continue;
    lua_createtable(L, 0, 3);        /* 4 */
    lua_pushinteger(L, i + 1);
    lua_setfield(L, 4, "slot");
    lua_rawgeti(L, 2, 3 * i + 1);    /* 5: token */
    lua_rawgeti(L, 2, 3 * i + 2);    /* 6: secret */
    lua_rawgeti(L, 2, 3 * i + 3);    /* 7: result field */
    sec.s[0] = string_at(L, 5, &sec.len[0]);
    sec.s[1] = string_at(L, 6, &sec.len[1]);
    if (sl->res.code) {
      lua_pushnil(L);
      dt_error_push(L, "transport", sl->res.code, NULL, 0, sl->res.retryable);
      dt_error_setclean(L, "message", sl->res.message, strlen(sl->res.message), 512, &sec);
    } else {
      dt_http *h = &sl->http;
      r.status = sl->res.status;
      r.body = h->body ? h->body : "";
      r.len = h->len;
      r.request_id = h->hdr.request_id;
      r.trace_id = h->hdr.trace_id;
      r.retry_after = h->hdr.retry_after;
      r.result_field = string_at(L, 7, &flen);
      r.secrets = sec;
      dt_map_push(L, &r);            /* 8, 9 */
    }
    if (lua_toboolean(L, 8)) {      /* a good answer's request id, as last() gives it */
      const char *rid = sl->http.hdr.request_id[0] ? sl->http.hdr.request_id
                                                   : sl->http.hdr.trace_id;
      char buf[DT_RID_MAX + 1];
      if (rid[0]) {
        lua_pushlstring(L, buf, dt_clean_rid(buf, rid, strlen(rid), &sec));
        lua_setfield(L, 4, "request_id");
      }
    }
    lua_pushboolean(L, lua_toboolean(L, 8));
    lua_setfield(L, 4, "ok");
    lua_pushvalue(L, 9);
    lua_setfield(L, 4, lua_toboolean(L, 8) ? "result" : "error");
    lua_settop(L, 4);
    lua_rawseti(L, 3, ++k);
  }
  return 1;
}

/* m:wait(timeout_ms) -> array of finished transfers (possibly empty)
** Runs the transfers until one finishes, timeout_ms pass or SIGINT comes
** (core.sigint). Upvalue 1: push_finished. */
static int multi_wait(lua_State *L) {
  multi *mu = check_multi(L);
  lua_Number t = luaL_checknumber(L, 2);
  long ms = t > 0 ? (t < 2147483647.0 ? (long)t : 2147483647L) : 0;
  int rc, i;
  if (!mu->open)
    return argument_error(L, "argument.closed", "multi", "the batch is closed");
  if (mu->busy)
    return argument_error(L, "argument.busy", "multi",
                          "the batch is in the middle of wait()");
  dt_multi_wait(mu->m, ms, &interrupted);
  lua_settop(L, 1);
  dt_getuservalue(L, 1);             /* 2 */
  /* Results are taken from the slots only once all of them are pushed: a
  ** memory error (or a finalizer's) leaves them for the next wait(). */
  mu->busy = 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, mu->m);
  lua_pushvalue(L, 2);
  rc = lua_pcall(L, 2, 1, 0);
  mu->busy = 0;
  if (rc == 0) {
    for (i = 0; i < mu->m->n; i++) {
      if (mu->m->slots[i].state != DT_SLOT_DONE) continue;
      dt_multi_release(mu->m, i);
      /* slots of the array part: setting them never allocates */
      lua_pushnil(L);
      lua_rawseti(L, 2, 3 * i + 1);
      lua_pushnil(L);
      lua_rawseti(L, 2, 3 * i + 2);
      lua_pushnil(L);
      lua_rawseti(L, 2, 3 * i + 3);
    }
  }
  if (!mu->open) {                   /* a close() that came meanwhile */
    dt_multi_close(mu->m);
    mu->m = NULL;
  }
  if (rc != 0) return lua_error(L);
  return 1;
}

/* m:active() -> transfers started whose results wait() has not given */
static int multi_active(lua_State *L) {
  multi *mu = check_multi(L);
  lua_pushinteger(L, mu->m ? mu->m->running + mu->m->done : 0);
  return 1;
}

/* Ends the transfers in flight and frees everything; deferred to the end
** of wait() when a finalizer calls it while wait() pushes results. */
static int multi_close(lua_State *L) {
  multi *mu = check_multi(L);
  mu->open = 0;
  if (!mu->busy) {
    dt_multi_close(mu->m);
    mu->m = NULL;
  }
  return 0;
}

static int multi_tostring(lua_State *L) {
  multi *mu = check_multi(L);
  lua_pushfstring(L, "dingtalk.multi (%s): %p", mu->open ? "open" : "closed",
                  (void *)mu);
  return 1;
}

/* A Lua state closing with the handler still installed restores the old
** one first: its C library (this handler) is unloaded right after. */
static const char sigint_guard_key = 'g';

static void restore_sigint(void) {
  if (sigint_on) sigaction(SIGINT, &old_sigint, NULL);
  sigint_on = 0;
}

static int sigint_guard_gc(lua_State *L) {
  (void)L;
  restore_sigint();
  return 0;
}

/* core.sigint(on) -> true | nil, message
** true: a SIGINT handler that only sets a flag (core.interrupted, m:wait);
** false: the handler that was there before. Process-wide. */
static int core_sigint(lua_State *L) {
  int on = lua_toboolean(L, 1);
  if (on && !sigint_on) {
    struct sigaction sa;
    lua_pushlightuserdata(L, (void *)&sigint_guard_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
      lua_pushlightuserdata(L, (void *)&sigint_guard_key);
      lua_newuserdata(L, 1);
      lua_createtable(L, 0, 1);
      lua_pushcfunction(L, sigint_guard_gc);
      lua_setfield(L, -2, "__gc");
      lua_setmetatable(L, -2);
      lua_rawset(L, LUA_REGISTRYINDEX);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: the host's reads and writes go on; poll() (m:wait) is
    ** never restarted whatever the flag, so it returns at once. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, &old_sigint) != 0) {
      lua_pushnil(L);
      lua_pushstring(L, strerror(errno));
      return 2;
    }
    sigint_on = 1;
  } else if (!on) {
    restore_sigint();
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.interrupted() -> whether SIGINT came since the last call (clears it) */
static int core_interrupted(lua_State *L) {
  int was = interrupted != 0;
  interrupted = 0;
  lua_pushboolean(L, was);
  return 1;
}

/* Argument i (a string, or nil for none) as secret k. */
static void opt_secret(lua_State *L, int i, dt_secrets *sec, int k) {
  sec->s[k] = luaL_optlstring(L, i, NULL, &sec->len[k]);
  if (sec->s[k] == NULL) sec->len[k] = 0;
}

/* core.redact(v, secret [, secret2]) -> v with both secrets taken out when
** it is a string (see dt_error.h), v itself otherwise. For text made outside
** the core (Lua-made errors, hook events) before it reaches a caller. */
static int core_redact(lua_State *L) {
  dt_secrets sec;
  size_t len;
  const char *s;
  opt_secret(L, 2, &sec, 0);
  opt_secret(L, 3, &sec, 1);
  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_settop(L, 1);
    return 1;
  }
  s = lua_tolstring(L, 1, &len);
  dt_push_redacted(L, s, len, &sec);
  return 1;
}

/* core.request_id(s, secret [, secret2]) -> s cleaned, redacted and cut
** as errors and client:last() give a header request id. For transports
** other than libcurl (a good answer's id in a batch). */
static int core_request_id(lua_State *L) {
  dt_secrets sec;
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char buf[DT_RID_MAX + 1];
  opt_secret(L, 2, &sec, 0);
  opt_secret(L, 3, &sec, 1);
  lua_pushlstring(L, buf, dt_clean_rid(buf, s, len, &sec));
  return 1;
}

static const char *header_field(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/* core.map(status, headers, body [, result_field [, secret [, secret2]]])
**   -> true, result | nil, error
** The mapping on its own, for transports other than libcurl. `headers` has
** lowercase names. */
static int core_map(lua_State *L) {
  dt_response r;
  lua_Number status = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  r.body = luaL_checklstring(L, 3, &r.len);
  r.result_field = luaL_optstring(L, 4, NULL);
  opt_secret(L, 5, &r.secrets, 0);
  opt_secret(L, 6, &r.secrets, 1);
  luaL_argcheck(L, status >= 100 && status <= 999, 1, "not an HTTP status");
  r.status = (long)status;
  r.request_id = header_field(L, 2, "x-acs-request-id");
  r.trace_id = header_field(L, 2, "x-acs-trace-id");
  r.retry_after = header_field(L, 2, "retry-after");
  return dt_map_push(L, &r);
}

/* core.sleep(seconds): blocks the calling thread (outside nginx cosocket
** phases this is the only pause plain Lua has). Restarted on EINTR. */
static int core_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts;
  luaL_argcheck(L, s >= 0 && s <= 86400, 1, "seconds must be 0..86400");
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  return 0;
}

/* core.now() -> seconds of a monotonic clock (deadlines, durations). */
static int core_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* core.error(t) -> t, with the error metatable (for errors made in Lua). */
static int core_error(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_getmetatable(L, DT_ERROR_MT);
  lua_setmetatable(L, 1);
  return 1;
}

/* core.is_error(v) -> boolean */
static int core_is_error(lua_State *L) {
  int yes = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, DT_ERROR_MT);
    yes = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* core.printable(v, max) -> true when v is a string of 1..max bytes of
** printable ASCII: the usual robot code or token, accepted in one C pass.
** Anything else gets the full checks in Lua, which name the exact fault. */
static int core_printable(lua_State *L) {
  size_t len;
  const char *s;
  lua_Integer max = luaL_checkinteger(L, 2);
  int yes = lua_type(L, 1) == LUA_TSTRING;
  if (yes) {
    s = lua_tolstring(L, 1, &len);
    yes = len > 0 && (lua_Integer)len <= max && !any_outside(s, len, 1);
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* Pushes the first key of the table at t that the table at allowed does
** not list (allowed[k] must be true) and returns 1; returns 0, pushing
** nothing, when every key is known. */
static int first_unknown(lua_State *L, int t, int allowed) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int known;
    lua_pop(L, 1);                    /* the value; the key stays */
    lua_pushvalue(L, -1);
    lua_rawget(L, allowed);
    known = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!known) return 1;
  }
  return 0;
}

/* core.unknown_key(t, allowed) -> the first key of t that allowed does not
** list, or nil. The C loop keeps the argument check of every call cheap;
** the Lua caller builds the error. */
static int core_unknown_key(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (!first_unknown(L, 1, 2)) lua_pushnil(L);
  return 1;
}

/* core.plain_args(args, allowed, f1, max1, f2, max2) -> v1, v2 | nil
** The common case of an operation's arguments in one C call: a table with
** no key outside `allowed` whose fields f1 and f2 are printable-ASCII
** strings of 1..max bytes. nil means "not that simple": the Lua checks
** then run and raise the precise argument error. */
static int printable_field(lua_State *L, int t, const char *k, lua_Integer max) {
  size_t len;
  const char *s;
  lua_getfield(L, t, k);
  if (lua_type(L, -1) != LUA_TSTRING) return 0;
  s = lua_tolstring(L, -1, &len);
  return len > 0 && (lua_Integer)len <= max && !any_outside(s, len, 1);
}

static int core_plain_args(lua_State *L) {
  const char *f1 = luaL_checkstring(L, 3);
  lua_Integer max1 = luaL_checkinteger(L, 4);
  const char *f2 = luaL_checkstring(L, 5);
  lua_Integer max2 = luaL_checkinteger(L, 6);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 6);
  if (lua_type(L, 1) != LUA_TTABLE || first_unknown(L, 1, 2)) return 0;
  if (!printable_field(L, 1, f1, max1) || !printable_field(L, 1, f2, max2))
    return 0;
  return 2;                           /* the two values, on top */
}

/* "post" is set apart in luaopen: it takes an upvalue. */
static const luaL_Reg client_methods[] = {
  {"last", client_last},
  {"close", client_close},
  {NULL, NULL}
};

static const luaL_Reg core_functions[] = {
  {"new_client", core_new_client},
  {"map", core_map},
  {"redact", core_redact},
  {"request_id", core_request_id},
  {"error", core_error},
  {"is_error", core_is_error},
  {"printable", core_printable},
  {"unknown_key", core_unknown_key},
  {"plain_args", core_plain_args},
  {"clear_closure", core_clear_closure},
  {"sleep", core_sleep},
  {"now", core_now},
  {"sha256", dt_sha256_lua},
  {"sigint", core_sigint},
  {"interrupted", core_interrupted},
  {NULL, NULL}
};

/* "wait" is set apart in luaopen: it takes an upvalue. */
static const luaL_Reg multi_methods[] = {
  {"start", multi_start},
  {"active", multi_active},
  {"close", multi_close},
  {NULL, NULL}
};

/* "libcurl/7.88.1 OpenSSL/3.0.x zlib/1.2.13", from curl_version_info: not
** curl_version(), which also asks libldap for its version and so runs
** libldap's global init (SASL client init, loading every SASL plugin) at
** require time; that memory is lost each time Lua closes a state and
** dlcloses the module. */
static void push_curl_version(lua_State *L) {
  const curl_version_info_data *d = dt_curl.version_info(CURLVERSION_NOW);
  lua_pushfstring(L, "libcurl/%s", d->version);
  if (d->ssl_version) lua_pushfstring(L, " %s", d->ssl_version);
  else lua_pushliteral(L, "");
  if (d->libz_version) lua_pushfstring(L, " zlib/%s", d->libz_version);
  else lua_pushliteral(L, "");
  lua_concat(L, 3);
}

DT_EXPORT int luaopen_dingtalk_core(lua_State *L) {
  const char *err = dt_curl_open();
  if (err) return luaL_error(L, "dingtalk.core: %s", err);
  dt_map_init(L);
  dt_error_init(L);
  /* One post closure, for client:post and core.post alike. */
  lua_pushcfunction(L, push_outcome);
  lua_pushcclosure(L, client_post, 1);
  if (luaL_newmetatable(L, DT_CLIENT_MT)) {
    dt_newlib(L, client_methods);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "post");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    /* getmetatable(client) gives this, not the table holding __gc */
    lua_pushliteral(L, DT_CLIENT_MT);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, DT_MULTI_MT)) {
    dt_newlib(L, multi_methods);
    lua_pushcfunction(L, push_finished);
    lua_pushcclosure(L, multi_wait, 1);
    lua_setfield(L, -2, "wait");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, multi_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, multi_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, DT_MULTI_MT);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  dt_newlib(L, core_functions);
  lua_pushcfunction(L, core_multi);
  lua_setfield(L, -2, "multi");
  lua_insert(L, -2);
  lua_setfield(L, -2, "post");          /* = client:post, without the method lookup */
  lua_pushliteral(L, DT_VERSION);
  lua_setfield(L, -2, "_VERSION");
  push_curl_version(L);
  lua_setfield(L, -2, "curl_version");
  return 1;
}
