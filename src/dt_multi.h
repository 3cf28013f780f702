/*
** dt_multi.h: many transfers at once over libcurl's multi interface.
**
** n slots, each a dt_http (its own easy handle, set up once): a transfer is
** prepared and classified by dt_http exactly as a single call is (TLS
** verification, no redirects, protocols, max_body, timeouts, head limits
** and framing checks, request ids, fork detection, the token wiped after
** the transfer); only the running differs. Connections sit in the multi's
** pool, at most n of them (one per slot in flight), kept alive across
** transfers. Like dt_http this layer knows no Lua.
*/
#ifndef DT_MULTI_H
#define DT_MULTI_H

#include <signal.h>
#include <stddef.h>
#include "dt_http.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Slots of one multi at most. */
#define DT_MULTI_MAX 256

/* A slot: free, running (in the multi), or done (its result not taken). */
enum { DT_SLOT_FREE = 0, DT_SLOT_RUNNING, DT_SLOT_DONE };

typedef struct dt_multi_slot {
  dt_http http;
  int state;
  dt_http_result res;            /* valid in DT_SLOT_DONE */
  char *req;                     /* the request body, copied: alive until done */
  size_t reqcap;
} dt_multi_slot;

typedef struct dt_multi {
  CURLM *multi;                  /* NULL after a failed re-creation in a child */
  int n;
  int running;                   /* slots in DT_SLOT_RUNNING */
  int done;                      /* slots in DT_SLOT_DONE */
  long pid;                      /* the process that owns the connections */
  int *sockets;                  /* shared by every slot's dt_http */
  int nsockets;
  dt_multi_slot *slots;
} dt_multi;

/* Makes a multi of n (1..DT_MULTI_MAX) slots in *out. Returns NULL, or a
** static message; on failure *out may still hold a partial multi, which
** dt_multi_close frees. */
const char *dt_multi_open(dt_multi **out, const dt_http_opts *o, int n);

/* Ends every transfer and frees everything, m included (NULL: nothing). */
void dt_multi_close(dt_multi *m);

/* Starts a POST on slot (0-based), which must be DT_SLOT_FREE; the token
** as for dt_http_post (checked by the caller); body is copied. A transfer
** that cannot start (out of memory) is DT_SLOT_DONE at once, with its
** error as the result. */
void dt_multi_start(dt_multi *m, int slot, const char *url, const char *token,
                    size_t tlen, const char *body, size_t len);

/* Runs the transfers until at least one slot is DT_SLOT_DONE, nothing is
** running, timeout_ms have passed, or *stop (when not NULL) is non-zero
** (checked at least every 100 ms: a signal handler's flag). Runs them at
** least once in any case. Returns the number of DT_SLOT_DONE slots. */
int dt_multi_wait(dt_multi *m, long timeout_ms, volatile sig_atomic_t *stop);

/* DT_SLOT_DONE -> DT_SLOT_FREE once the caller has taken the result (the
** slot's res and http buffers). */
void dt_multi_release(dt_multi *m, int slot);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
