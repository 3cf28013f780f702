/*
** dt_error.h: the error table every failure becomes.
**
** { kind, code, message, status, request_id, retryable, ... } with a
** __tostring that prints one line. Text that comes from a server is cleaned
** before it lands in a field: the caller's secrets (the access token, the
** app secret) are redacted first, then control characters and invalid UTF-8
** are replaced and the length is capped, so an error can go to a log as it
** is and no cut can leave a piece of a secret behind.
**
** Redaction: every run of bytes covered by an 8-byte window that also occurs
** in a secret becomes one "[redacted]" (so any fragment of 8 or more bytes
** of a secret goes, not only whole occurrences), also where the text holds
** it JSON-escaped ("\/", "\u00XX": a page showing a request body back); a
** secret of 6 or 7 bytes only when it occurs whole (as it is); a shorter one
** is never looked for.
*/
#ifndef DT_ERROR_H
#define DT_ERROR_H

#include <stddef.h>
#include <stdint.h>
#include "dt_compat.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define DT_ERROR_MT "dingtalk.error"

/* What must never appear in server text we keep: the access token of the
** call and, on a client with app credentials, the app secret. An entry with
** s NULL or len 0 is unused. */
#define DT_SECRETS_MAX 2
typedef struct dt_secrets {
  const char *s[DT_SECRETS_MAX];
  size_t len[DT_SECRETS_MAX];
} dt_secrets;

/* Longest secret the redactor indexes (tokens are refused above this length
** anyway). A longer one cannot be indexed, and then every text is redacted
** whole: failing closed beats leaking. */
#define DT_SECRET_MAX 1024
#define DT_WINDOW 8

/* The secrets prepared for one response: their 8-byte windows, sorted and
** distinct, so each text position costs one binary search. About 16 KiB:
** built on the C stack once per call (no heap, nothing to free across a Lua
** error) and shared by every field of the response. */
typedef struct dt_redactor {
  size_t n;                                /* windows in win */
  int all;                                 /* a secret too long to index */
  const char *whole[DT_SECRETS_MAX];       /* 6-7 byte secrets, matched whole */
  size_t wlen[DT_SECRETS_MAX];
  uint64_t win[DT_SECRETS_MAX * (DT_SECRET_MAX - DT_WINDOW + 1)];
} dt_redactor;

void dt_redactor_init(dt_redactor *r, const dt_secrets *secrets);

/* Creates the metatable; called once per state from luaopen. */
void dt_error_init(lua_State *L);

/* Pushes a new error table. status 0 leaves `status` nil; a NULL message
** leaves `message` for the caller to set (dt_error_setclean). */
void dt_error_push(lua_State *L, const char *kind, const char *code,
                   const char *message, long status, int retryable);

/* Sets field `k` of the table at the top to a cleaned copy of s[0..len). */
void dt_error_setclean(lua_State *L, const char *k, const char *s, size_t len,
                       size_t max, const dt_secrets *secrets);

/* The same with a prepared redactor (dt_map: one per response). */
void dt_error_setclean_r(lua_State *L, const char *k, const char *s, size_t len,
                         size_t max, const dt_redactor *r);

/* Cleaned text is capped at DT_CLEAN_MAX bytes; dt_clean may write
** DT_CLEAN_SLACK bytes past its cap ("..." and the NUL). */
#define DT_CLEAN_MAX 512
#define DT_CLEAN_SLACK 4

/* Writes a cleaned copy of s[0..len), at most `max` (<= DT_CLEAN_MAX) bytes
** of text plus "..." when cut, NUL-terminated, to out (room for
** max + DT_CLEAN_SLACK bytes) and returns its length. Pure C: no Lua, no
** allocation, so the transport can clean what it keeps (request ids). */
size_t dt_clean(char *out, const char *s, size_t len, size_t max,
                const dt_secrets *secrets);
size_t dt_clean_r(char *out, const char *s, size_t len, size_t max,
                  const dt_redactor *r);

/* A request id from a header, as errors carry it: the whole value cleaned
** and redacted, then at most DT_RID_MAX bytes in all ("..." included).
** out has room for DT_RID_MAX + 1 bytes; returns the length. For the
** transport too (client:last()), so both give the same text. */
#define DT_RID_MAX 127
size_t dt_clean_rid(char *out, const char *s, size_t len, const dt_secrets *secrets);
size_t dt_clean_rid_r(char *out, const char *s, size_t len, const dt_redactor *r);

/* Pushes a cleaned copy of s[0..len): see the file comment. */
void dt_push_clean(lua_State *L, const char *s, size_t len, size_t max,
                   const dt_secrets *secrets);
void dt_push_clean_r(lua_State *L, const char *s, size_t len, size_t max,
                     const dt_redactor *r);

/* Pushes s[0..len) with the secrets taken out and nothing else changed (no
** cleaning, no cap): for text made outside the core (core.redact). */
void dt_push_redacted(lua_State *L, const char *s, size_t len,
                      const dt_secrets *secrets);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
