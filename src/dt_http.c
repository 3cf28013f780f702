/*
** dt_http.c: the libcurl transport (see dt_http.h for why it knows no Lua).
*/
#include <stdlib.h>
#include <string.h>

#include "dt_curl.h"
#include "dt_http.h"

/* Starts at the size of a typical answer and grows by doubling. */
#define DT_BODY_INITIAL 1024
/* A buffer above this is released after the call (dt_http_trim). */
#define DT_BODY_KEEP (64 * 1024)

/* The callbacks below only copy bytes: they return a short count to make
** libcurl fail the transfer cleanly, never longjmp. */
static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  dt_http *h = (dt_http *)ud;
  size_t add = size * n;
  if (add > h->max - h->len) {     /* h->len <= h->max always holds */
    h->too_large = 1;
    return 0;
  }
  if (h->len + add + 1 > h->cap) {
    size_t cap = h->cap ? h->cap : DT_BODY_INITIAL;
    char *p;
    while (cap < h->len + add + 1) cap *= 2;
    p = (char *)realloc(h->body, cap);
    if (p == NULL) return 0;       /* reported as a write error */
    h->body = p;
    h->cap = cap;
  }
  memcpy(h->body + h->len, data, add);
  h->len += add;
  h->body[h->len] = '\0';
  return add;
}

static int header_is(const char *line, size_t len, const char *name) {
  size_t i, n = strlen(name);
  if (len <= n || line[n] != ':') return 0;
  for (i = 0; i < n; i++) {
    char c = line[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != name[i]) return 0;
  }
  return 1;
}

static void keep_value(char *dst, size_t dstlen, const char *line, size_t len,
                       size_t namelen) {
  size_t i = namelen + 1, j = 0;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  while (len > i && (line[len - 1] == '\r' || line[len - 1] == '\n' ||
                     line[len - 1] == ' ' || line[len - 1] == '\t'))
    len--;
  for (; i < len && j + 1 < dstlen; i++) dst[j++] = line[i];
  dst[j] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *ud) {
  dt_http *h = (dt_http *)ud;
  size_t len = size * n;
  /* A new status line (after a 1xx, say) starts a new header block. */
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
    memset(&h->hdr, 0, sizeof h->hdr);
  else if (header_is(data, len, "x-acs-request-id"))
    keep_value(h->hdr.request_id, sizeof h->hdr.request_id, data, len, 16);
  else if (header_is(data, len, "x-acs-trace-id"))
    keep_value(h->hdr.trace_id, sizeof h->hdr.trace_id, data, len, 14);
  else if (header_is(data, len, "retry-after"))
    keep_value(h->hdr.retry_after, sizeof h->hdr.retry_after, data, len, 11);
  return len;
}

const char *dt_http_open(dt_http *h, const dt_http_opts *o) {
  struct curl_slist *l;
  CURL *c;
  const char *err = dt_curl_open();   /* done by require already; cheap */

  if (err) return err;
  memset(h, 0, sizeof *h);
  h->max = o->max_body;
  h->curl = c = dt_curl.easy_init();
  if (c == NULL) return "curl_easy_init failed";

  l = dt_curl.slist_append(NULL, "Content-Type: application/json");
  if (l) h->headers = l;
  if (l) l = dt_curl.slist_append(h->headers, "Accept: application/json");
  /* An empty Expect: stops libcurl waiting for "100 Continue". */
  if (l) l = dt_curl.slist_append(h->headers, "Expect:");
  if (l == NULL) return "out of memory";
  h->token_node.data = h->token_line;
  h->token_node.next = h->headers;

#define SET(opt, val) \
  if (dt_curl.easy_setopt(c, opt, val) != CURLE_OK) return "curl_easy_setopt " #opt " failed"
  /* Signals are not ours to take: nginx and threaded hosts rely on theirs. */
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_ERRORBUFFER, h->errbuf);
  SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
  SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  /* The token rides in a header: a redirect must never carry it elsewhere. */
  SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_body);
  SET(CURLOPT_POST, 1L);
  SET(CURLOPT_HTTPHEADER, h->headers);   /* h->with_token is 0 */
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)h);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)h);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  if (o->user_agent) SET(CURLOPT_USERAGENT, o->user_agent);
  if (o->cafile) SET(CURLOPT_CAINFO, o->cafile);
  if (o->proxy) SET(CURLOPT_PROXY, o->proxy);
#undef SET
  return NULL;
}

void dt_http_close(dt_http *h) {
  if (h->curl) dt_curl.easy_cleanup(h->curl);
  if (h->headers) dt_curl.slist_free_all(h->headers);
  free(h->body);
  free(h->url);
  h->curl = NULL;
  h->headers = NULL;
  h->body = NULL;
  h->url = NULL;
  h->len = h->cap = 0;
}

void dt_http_trim(dt_http *h) {
  if (h->cap > DT_BODY_KEEP) {
    free(h->body);
    h->body = NULL;
    h->len = h->cap = 0;
  }
}

/* Stable local codes for libcurl failures. Retryable: the request may not
** have been handled, and clearing is idempotent, so trying again is safe. */
static void classify(dt_http *h, CURLcode rc, dt_http_result *out) {
  const char *code = "transport.other";
  int retry = 0;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      code = "transport.timeout"; retry = 1; break;
    case CURLE_COULDNT_RESOLVE_HOST:
      code = "transport.dns"; retry = 1; break;
    case CURLE_COULDNT_RESOLVE_PROXY:
      code = "transport.proxy"; retry = 1; break;
    case CURLE_COULDNT_CONNECT:
      code = "transport.connect"; retry = 1; break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      code = "transport.closed"; retry = 1; break;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
      code = "transport.bad_response"; break;
    case CURLE_FILESIZE_EXCEEDED:
      code = "transport.too_large"; break;
    case CURLE_WRITE_ERROR:
      code = h->too_large ? "transport.too_large" : "transport.memory"; break;
    case CURLE_OUT_OF_MEMORY:
      code = "transport.memory"; break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
      code = "transport.tls"; break;
    default:
      break;
  }
  if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && h->too_large))
    out->message = "response body larger than max_body";
  else
    out->message = h->errbuf[0] ? h->errbuf : dt_curl.easy_strerror(rc);
  out->code = code;
  out->retryable = retry;
}

void dt_http_method(dt_http *h, int method) {
  static const char *const names[] = {"POST", "GET", "PUT", "DELETE", "PATCH"};
  if (method == h->method) return;
  if (method == DT_GET) {
    dt_curl.easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    dt_curl.easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
  } else {
    dt_curl.easy_setopt(h->curl, CURLOPT_POST, 1L);
    dt_curl.easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method == DT_POST ? NULL : names[method]);
  }
  h->method = method;
}

/* Sets the URL only when it changed: libcurl copies it on every setopt,
** and a client nearly always calls the same few paths. */
static void set_url(dt_http *h, const char *url) {
  size_t n;
  if (h->url && strcmp(h->url, url) == 0) return;
  free(h->url);
  h->url = NULL;
  /* Remembered only once libcurl has it: a failed setopt (out of memory)
  ** must be tried again next time, not skipped. */
  if (dt_curl.easy_setopt(h->curl, CURLOPT_URL, url) != CURLE_OK) return;
  n = strlen(url) + 1;
  h->url = (char *)malloc(n);        /* NULL: no copy, set it every time */
  if (h->url) memcpy(h->url, url, n);
}

void dt_http_post(dt_http *h, const char *url, const char *token, size_t tlen,
                  const char *body, size_t len, dt_http_result *out) {
  static const size_t prefix = sizeof DT_TOKEN_HEADER - 1;
  CURLcode rc;
  long status = 0;
  int with_token = token != NULL;

  h->len = 0;
  h->too_large = 0;
  h->errbuf[0] = '\0';
  if (h->body) h->body[0] = '\0';
  memset(&h->hdr, 0, sizeof h->hdr);
  memset(out, 0, sizeof *out);

  if (with_token) {
    memcpy(h->token_line, DT_TOKEN_HEADER, prefix);
    memcpy(h->token_line + prefix, token, tlen);
    h->token_line[prefix + tlen] = '\0';
  }
  if (with_token != h->with_token) {
    dt_curl.easy_setopt(h->curl, CURLOPT_HTTPHEADER, with_token ? &h->token_node : h->headers);
    h->with_token = with_token;
  }
  set_url(h, url);
  if (h->method != DT_GET) {
    dt_curl.easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    dt_curl.easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  }
  rc = dt_curl.easy_perform(h->curl);
  /* the token lives no longer than the transfer */
  if (with_token) memset(h->token_line + prefix, 0, tlen);

  if (rc != CURLE_OK) {
    classify(h, rc, out);
    return;
  }
  dt_curl.easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
  out->status = status;
}
