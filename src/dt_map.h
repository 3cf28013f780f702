/*
** dt_map.h: an HTTP response, from any transport, into a result or an error.
**
** The libcurl path calls it directly; other transports (OpenResty
** cosockets) reach it through core.map, so every transport gives the same
** results and the same error tables.
*/
#ifndef DT_MAP_H
#define DT_MAP_H

#include <stddef.h>
#include "dt_error.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

typedef struct dt_response {
  long status;
  const char *body;
  size_t len;
  const char *request_id;        /* header x-acs-request-id, NULL or "" if absent */
  const char *trace_id;          /* header x-acs-trace-id */
  const char *retry_after;       /* header Retry-After */
  const char *result_field;      /* NULL: the decoded object is the result */
  dt_secrets secrets;            /* redacted from every text taken from the server */
} dt_response;

/* Loads a private lua-cjson instance for this state (so a caller's cjson
** settings never change how responses are read). Raises if cjson is absent. */
void dt_map_init(lua_State *L);

/* Pushes `true, result` or `nil, error`; returns 2. */
int dt_map_push(lua_State *L, const dt_response *r);

/* The usual answer, {"<result_field>":true} or {"<result_field>":false}
** byte for byte (result_field set): 1 or 0, else -1. Reads only r. */
int dt_map_exact(const dt_response *r);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
