/*
** dt_error.h: the error table every failure becomes.
**
** { kind, code, message, status, request_id, retryable, ... } with a
** __tostring that prints one line. Text that comes from a server is cleaned
** before it lands in a field: control bytes and invalid UTF-8 are replaced,
** the length is capped and the caller's secret (the access token) is
** redacted, so an error can go to a log as it is.
*/
#ifndef DT_ERROR_H
#define DT_ERROR_H

#include <stddef.h>
#include "dt_compat.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define DT_ERROR_MT "dingtalk.error"

typedef struct dt_secret {
  const char *s;                 /* NULL or empty: nothing to redact */
  size_t len;
} dt_secret;

/* Creates the metatable; called once per state from luaopen. */
void dt_error_init(lua_State *L);

/* Pushes a new error table. status 0 leaves `status` nil; a NULL message
** leaves `message` for the caller to set (dt_error_setclean). */
void dt_error_push(lua_State *L, const char *kind, const char *code,
                   const char *message, long status, int retryable);

/* Sets field `k` of the table at the top to a cleaned copy of s[0..len). */
void dt_error_setclean(lua_State *L, const char *k, const char *s, size_t len,
                       size_t max, const dt_secret *secret);

/* Pushes a cleaned copy of s[0..len): see the file comment. */
void dt_push_clean(lua_State *L, const char *s, size_t len, size_t max,
                   const dt_secret *secret);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
