/*
** dt_multi.c: n dt_http transfers at once (see dt_multi.h).
*/
/* getpid, clock_gettime and nanosleep are POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dt_curl.h"
#include "dt_multi.h"

/* The longest a wait sleeps before it looks at *stop again: a signal that
** lands between the look and the poll is seen this late at worst. */
#define DT_POLL_SLICE 100

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void finish(dt_multi *m, dt_multi_slot *s) {
  s->state = DT_SLOT_DONE;
  m->done++;
}

/* A transfer that never ran: its error is the slot's result. */
static void fail(dt_multi *m, dt_multi_slot *s, const char *code, const char *message) {
  memset(&s->res, 0, sizeof s->res);
  s->res.code = code;
  s->res.message = message;
  finish(m, s);
}

static CURLM *new_multi(int n) {
  CURLM *c = dt_curl.multi_init();
  /* The pool keeps as many connections as there are slots: one each. */
  if (c) dt_curl.multi_setopt(c, CURLMOPT_MAXCONNECTS, (long)n);
  return c;
}

const char *dt_multi_open(dt_multi **out, const dt_http_opts *o, int n) {
  dt_multi *m;
  int i;
  const char *err = dt_curl_open();
  *out = NULL;
  if (err) return err;
  if (n < 1 || n > DT_MULTI_MAX) return "bad number of slots";
  m = (dt_multi *)calloc(1, sizeof *m);
  if (m == NULL) return "out of memory";
  *out = m;
  m->pid = (long)getpid();
  /* every connection the pool can hold, and the connects in progress (two
  ** sockets each while both address families are tried) */
  m->nsockets = 3 * n + DT_SOCKETS_MAX;
  m->sockets = (int *)malloc((size_t)m->nsockets * sizeof *m->sockets);
  m->slots = (dt_multi_slot *)calloc((size_t)n, sizeof *m->slots);
  if (m->sockets == NULL || m->slots == NULL) return "out of memory";
  for (i = 0; i < m->nsockets; i++) m->sockets[i] = -1;
  m->n = n;                      /* zeroed slots: dt_http_close takes them */
  m->multi = new_multi(n);
  if (m->multi == NULL) return "curl_multi_init failed";
  for (i = 0; i < n; i++) {
    dt_http *h = &m->slots[i].http;
    err = dt_http_open(h, o);
    if (err) return err;
    h->sockets = m->sockets;
    h->nsockets = m->nsockets;
  }
  return NULL;
}

/* A transfer taken out of the multi before its end: the token goes, the
** result is what `code` says. */
static void abort_transfer(dt_multi *m, dt_multi_slot *s, const char *code,
                           const char *message) {
  if (m->multi) dt_curl.multi_remove_handle(m->multi, s->http.curl);
  m->running--;
  dt_http_done(&s->http, CURLE_RECV_ERROR, &s->res);
  fail(m, s, code, message);
}

/* In a child of fork(): the pool's connections and the transfers in flight
** are the parent's. Their sockets become harmless (dt_http_disown, one
** pass over the shared table), the transfers end as transport.closed (the
** request went out; its answer belongs to the parent), and a new multi
** starts with no connection. If a socket could not be made harmless, the
** old multi is left as it is (a leak in the child, not a close alert on
** the parent's connection). */
static void forked(dt_multi *m) {
  int i, all = dt_http_disown(&m->slots[0].http);
  for (i = 0; i < m->n; i++)
    if (m->slots[i].state == DT_SLOT_RUNNING)
      abort_transfer(m, &m->slots[i], "transport.closed",
                     "the process forked during the transfer; its answer went to the parent");
  if (m->multi && all) dt_curl.multi_cleanup(m->multi);
  for (i = 0; i < m->nsockets; i++) m->sockets[i] = -1;
  m->pid = (long)getpid();
  for (i = 0; i < m->n; i++) m->slots[i].http.pid = m->pid;
  m->multi = new_multi(m->n);
}

void dt_multi_close(dt_multi *m) {
  int i, all = 1;
  if (m == NULL) return;
  if (m->slots && m->n && m->pid != (long)getpid())
    all = dt_http_disown(&m->slots[0].http);
  for (i = 0; i < m->n; i++)
    if (m->slots[i].state == DT_SLOT_RUNNING)
      abort_transfer(m, &m->slots[i], "transport.closed", "closed");
  /* The pool's connections close here, through the slots' callbacks: the
  ** slots go after. */
  if (m->multi && all) dt_curl.multi_cleanup(m->multi);
  m->multi = NULL;
  for (i = 0; i < m->n; i++) {
    dt_multi_slot *s = &m->slots[i];
    if (all) s->http.pid = (long)getpid();
    dt_http_close(&s->http);
    free(s->req);
  }
  free(m->slots);
  free(m->sockets);
  free(m);
}

void dt_multi_start(dt_multi *m, int slot, const char *url, const char *token,
                    size_t tlen, const char *body, size_t len) {
  dt_multi_slot *s = &m->slots[slot];
  if (m->pid != (long)getpid()) forked(m);
  /* The body must outlive the call that gave it: a copy, in a buffer the
  ** slot keeps (never empty: a NULL body would make libcurl read stdin). */
  if (len + 1 > s->reqcap) {
    char *p = (char *)realloc(s->req, len + 1);
    if (p == NULL) {
      fail(m, s, "transport.memory", "out of memory (the request body)");
      return;
    }
    s->req = p;
    s->reqcap = len + 1;
  }
  memcpy(s->req, body, len);
  s->req[len] = '\0';
  if (dt_http_prepare(&s->http, url, token, tlen, s->req, len, 0, &s->res)) {
    finish(m, s);
    return;
  }
  if (m->multi == NULL || dt_curl.multi_add_handle(m->multi, s->http.curl) != CURLM_OK) {
    dt_http_done(&s->http, CURLE_OUT_OF_MEMORY, &s->res);
    fail(m, s, "transport.memory", "out of memory (starting a transfer)");
    return;
  }
  s->state = DT_SLOT_RUNNING;
  m->running++;
}

/* Moves the transfers libcurl has finished to DT_SLOT_DONE. */
static void collect(dt_multi *m) {
  CURLMsg *msg;
  int left, i;
  while ((msg = dt_curl.multi_info_read(m->multi, &left)) != NULL) {
    CURL *e = msg->easy_handle;
    CURLcode rc;
    if (msg->msg != CURLMSG_DONE) continue;
    rc = msg->data.result;            /* msg is gone after remove_handle */
    for (i = 0; i < m->n; i++) {
      dt_multi_slot *s = &m->slots[i];
      if (s->state != DT_SLOT_RUNNING || s->http.curl != e) continue;
      dt_curl.multi_remove_handle(m->multi, e);
      m->running--;
      dt_http_done(&s->http, rc, &s->res);
      finish(m, s);
      break;
    }
  }
}

int dt_multi_wait(dt_multi *m, long timeout_ms, volatile sig_atomic_t *stop) {
  long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  if (m->pid != (long)getpid()) forked(m);
  for (;;) {
    long left;
    int running;
    if (m->multi && m->running) {
      dt_curl.multi_perform(m->multi, &running);
      collect(m);
    }
    if (m->done || m->running == 0 || (stop && *stop)) break;
    left = deadline - now_ms();
    if (left <= 0) break;
    if (left > DT_POLL_SLICE) left = DT_POLL_SLICE;
    if (dt_curl.multi_poll) {
      dt_curl.multi_poll(m->multi, NULL, 0, (int)left, NULL);
    } else {
      int fds = 0;
      dt_curl.multi_wait(m->multi, NULL, 0, (int)left, &fds);
      if (fds == 0) {              /* before 7.66 no socket means no wait */
        struct timespec ts;
        ts.tv_sec = 0;
        ts.tv_nsec = (left < 10 ? left : 10) * 1000000L;
        nanosleep(&ts, NULL);
      }
    }
  }
  return m->done;
}

void dt_multi_release(dt_multi *m, int slot) {
  dt_multi_slot *s = &m->slots[slot];
  if (s->state != DT_SLOT_DONE) return;
  s->state = DT_SLOT_FREE;
  m->done--;
  dt_http_trim(&s->http);
}
