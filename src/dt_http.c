/*
** dt_http.c: the libcurl transport (see dt_http.h for why it knows no Lua).
*/
/* getpid, dup2, open and socket are POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dt_curl.h"
#include "dt_http.h"

/* Starts at the size of a typical answer and grows by doubling. */
#define DT_BODY_INITIAL 1024
/* A buffer above this is released after the call (dt_http_trim). */
#define DT_BODY_KEEP (64 * 1024)

/* Why on_header stopped a transfer (h->bad_head). */
enum { DT_HEAD_OK = 0, DT_HEAD_TOO_BIG, DT_HEAD_FRAMING };

/* The largest Content-Length libcurl takes (curl_off_t is 64 bits). */
#define DT_OFF_MAX CURL_OFF_T_C(9223372036854775807)

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

/* Whether the header line is the header `name` (lowercase, n bytes). */
static int header_is(const char *line, size_t len, const char *name, size_t n) {
  size_t i;
  if (len <= n || line[n] != ':') return 0;
  for (i = 0; i < n; i++) {
    char c = line[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != name[i]) return 0;
  }
  return 1;
}

/* The value of a header line, blanks and CR/LF trimmed: [*v, *v + return). */
static size_t value_of(const char *line, size_t len, size_t namelen, const char **v) {
  size_t i = namelen + 1;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  while (len > i && (line[len - 1] == '\r' || line[len - 1] == '\n' ||
                     line[len - 1] == ' ' || line[len - 1] == '\t'))
    len--;
  *v = line + i;
  return len - i;
}

static void keep_value(char *dst, size_t dstlen, const char *line, size_t len,
                       size_t namelen) {
  const char *v;
  size_t n = value_of(line, len, namelen, &v);
  if (n > dstlen - 1) n = dstlen - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

/* Content-Length as the cosocket transport reads it: digits only and no
** overflow, else the framing is broken; above max_body, too large. libcurl
** has checked the form already, but lets an overflowing value through as
** "read to the end" when no size limit is set. */
static size_t content_length(dt_http *h, const char *line, size_t len) {
  const char *v;
  size_t n = value_of(line, len, 14, &v), i;
  curl_off_t x = 0;
  for (i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9' || x > (DT_OFF_MAX - (v[i] - '0')) / 10) {
      h->bad_head = DT_HEAD_FRAMING;
      return 0;
    }
    x = x * 10 + (v[i] - '0');
  }
  if (n == 0) {
    h->bad_head = DT_HEAD_FRAMING;
    return 0;
  }
  if (x > (curl_off_t)h->max) {
    h->too_large = 1;
    return 0;
  }
  return len;
}

/* Only plain chunking: libcurl would decode "gzip, chunked" on its own,
** the cosocket transport does not, and both must answer alike. */
static size_t transfer_encoding(dt_http *h, const char *line, size_t len) {
  static const char chunked[] = "chunked";
  const char *v;
  size_t n = value_of(line, len, 17, &v), i;
  if (n != sizeof chunked - 1) n = 0;
  for (i = 0; i < n; i++) {
    char c = v[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != chunked[i]) n = 0;
  }
  if (n == 0) {
    h->bad_head = DT_HEAD_FRAMING;
    return 0;
  }
  return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud) {
  dt_http *h = (dt_http *)ud;
  size_t len = size * n;
  /* A new status line (after a 1xx, say) starts a new header block. */
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    h->hdr.request_id[0] = h->hdr.trace_id[0] = h->hdr.retry_after[0] = '\0';
    h->head_bytes = 0;
    h->in_head = 1;
  }
  /* A head flood is refused, not retried: sent again, it floods again. */
  h->head_bytes += len;
  if (h->head_bytes > DT_HEAD_MAX) {
    h->bad_head = DT_HEAD_TOO_BIG;
    return 0;
  }
  if (len > 0 && len <= 2 && (data[0] == '\r' || data[0] == '\n')) {
    h->in_head = 0;
    return len;
  }
#define IS(name) header_is(data, len, name, sizeof name - 1)
  /* by the first letter, any case: one comparison per line at most */
  switch (len > 0 ? data[0] | 0x20 : 0) {
    case 'x':
      if (IS("x-acs-request-id"))
        keep_value(h->hdr.request_id, sizeof h->hdr.request_id, data, len, 16);
      else if (IS("x-acs-trace-id"))
        keep_value(h->hdr.trace_id, sizeof h->hdr.trace_id, data, len, 14);
      break;
    case 'r':
      if (IS("retry-after"))
        keep_value(h->hdr.retry_after, sizeof h->hdr.retry_after, data, len, 11);
      break;
    case 'c':
      if (IS("content-length")) return content_length(h, data, len);
      break;
    case 't':
      if (IS("transfer-encoding")) return transfer_encoding(h, data, len);
      break;
    default:
      break;
  }
#undef IS
  return len;
}

/* Called before every request libcurl sends in a transfer, re-sends
** included: the second one of an at-most-once transfer is refused. */
static int on_prereq(void *ud, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port) {
  dt_http *h = (dt_http *)ud;
  (void)conn_primary_ip; (void)conn_local_ip;
  (void)conn_primary_port; (void)conn_local_port;
  h->attempts++;
  return h->once && h->attempts > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

/* The handle's sockets are opened and closed here so that a child of
** fork() knows which descriptors it shares with its parent (see forked). */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose,
                                    struct curl_sockaddr *a) {
  dt_http *h = (dt_http *)ud;
  int i;
  curl_socket_t s;
  (void)purpose;
  for (i = 0; i < h->nsockets && h->sockets[i] >= 0; i++) {}
  if (i == h->nsockets) return CURL_SOCKET_BAD;   /* never seen: libcurl keeps few */
  s = socket(a->family, a->socktype, a->protocol);
  if (s != CURL_SOCKET_BAD) h->sockets[i] = s;
  return s;
}

static int on_close_socket(void *ud, curl_socket_t s) {
  dt_http *h = (dt_http *)ud;
  int i;
  for (i = 0; i < h->nsockets; i++)
    if (h->sockets[i] == s) h->sockets[i] = -1;
  return close(s);
}

/* In a child of fork(), the handle's connections are the parent's: the
** child must neither read nor write them. A harmless descriptor takes the
** place of each inherited socket (/dev/null, else an unconnected socket),
** so that whatever libcurl does on cleanup (TLS close alert, reads) goes
** nowhere and the parent's connections stay whole. Returns 0 when one of
** them could not be replaced: the handle must then never be cleaned up. */
int dt_http_disown(dt_http *h) {
  int i, all = 1, null = open("/dev/null", O_RDWR);
  if (null < 0) null = socket(AF_UNIX, SOCK_STREAM, 0);
  for (i = 0; i < h->nsockets; i++) {
    if (h->sockets[i] < 0) continue;
    if (null < 0 || dup2(null, h->sockets[i]) < 0) all = 0;
  }
  if (null >= 0) close(null);
  return all;
}

/* The first use in a child: the same options on a new handle, which has no
** connection yet. The old handle is cleaned up once its sockets are
** harmless; if they cannot be made so, it is left as it is (a leak in the
** child rather than a close alert on the parent's connection). */
static const char *forked(dt_http *h) {
  CURL *dup = dt_curl.easy_duphandle(h->curl);
  int i;
  if (dup == NULL) return "out of memory (a new connection after fork)";
  if (dt_http_disown(h)) dt_curl.easy_cleanup(h->curl);
  for (i = 0; i < h->nsockets; i++) h->sockets[i] = -1;
  h->curl = dup;
  h->pid = (long)getpid();
  return NULL;
}

/* Appends the file at path to buf[*len..] (grown as needed); 0 when it
** cannot be read. */
static int append_file(char **buf, size_t *len, size_t *cap, const char *path) {
  FILE *f = fopen(path, "rb");
  size_t n;
  if (f == NULL) return 0;
  do {
    if (*cap - *len < 4096) {
      size_t ncap = *cap ? *cap * 2 : 64 * 1024;
      char *p = (char *)realloc(*buf, ncap);
      if (p == NULL) break;
      *buf = p;
      *cap = ncap;
    }
    n = fread(*buf + *len, 1, *cap - *len, f);
    *len += n;
  } while (n > 0);
  n = (size_t)ferror(f);
  fclose(f);
  return n == 0;
}

/* Whether dir holds CA certificates under OpenSSL's hashed names
** ("5ed36f99.0"): a CA directory libcurl can look issuers up in. */
static int hashed_ca_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int yes = 0;
  if (d == NULL) return 0;
  while (!yes && (e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    size_t i;
    for (i = 0; i < 8 && isxdigit((unsigned char)n[i]); i++) {}
    yes = i == 8 && n[8] == '.' && isdigit((unsigned char)n[9]);
  }
  closedir(d);
  return yes;
}

/* `cafile` adds to the system CAs (README): libcurl's CURLOPT_CAINFO
** replaces its default bundle, and only its default CA directory stays.
** Where that directory holds the system's CAs (Debian, Ubuntu), the cafile
** alone is enough, and cheap: libcurl keeps the parsed file between
** connections. Elsewhere (a system store that is a bundle only) the handle
** gets the cafile and the default bundle as one in-memory bundle, which
** libcurl parses again for every new connection (some 20 ms for a system
** bundle). Returns 0 when the cafile alone is to be set: the directory is
** enough, or the blob cannot be made (libcurl before 7.77, a TLS library
** without blobs, an unreadable file). */
static int add_cafile(CURL *c, const char *cafile) {
  char *def = NULL, *dir = NULL, *buf = NULL;
  size_t len = 0, cap = 0;
  struct curl_blob blob;
  int ok = 0;
  if (dt_curl.easy_getinfo(c, CURLINFO_CAPATH, &dir) == CURLE_OK && dir && hashed_ca_dir(dir))
    return 0;
  if (dt_curl.easy_getinfo(c, CURLINFO_CAINFO, &def) != CURLE_OK) def = NULL;
  if (append_file(&buf, &len, &cap, cafile) && len < cap) {
    buf[len++] = '\n';                /* a last line without its newline */
    /* no default bundle (or none readable): the cafile alone, as before */
    if (def) (void)append_file(&buf, &len, &cap, def);
    blob.data = buf;
    blob.len = len;
    blob.flags = CURL_BLOB_COPY;
    ok = dt_curl.easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob) == CURLE_OK;
  }
  free(buf);
  return ok;
}

/* The first of the variables set to a non-empty value (libcurl takes an
** empty one as unset), or NULL. */
static const char *env(const char *a, const char *b, const char *c, const char *d) {
  const char *names[4];
  int i;
  names[0] = a; names[1] = b; names[2] = c; names[3] = d;
  for (i = 0; i < 4 && names[i]; i++) {
    const char *v = getenv(names[i]);
    if (v && v[0]) return v;
  }
  return NULL;
}

/* A copy of v (NULL: none) in *dst; 0 when out of memory. */
static int keep_env(char **dst, const char *v) {
  size_t n;
  if (v == NULL) return 1;
  n = strlen(v) + 1;
  if ((*dst = (char *)malloc(n)) == NULL) return 0;
  memcpy(*dst, v, n);
  return 1;
}

/* The constant headers of every request; with expect, an empty Expect:
** after them, which stops libcurl waiting for "100 Continue". NULL when
** out of memory (nothing kept). */
static struct curl_slist *constant_headers(int expect) {
  static const char *const lines[] = {
    "Content-Type: application/json", "Accept: application/json", "Expect:"
  };
  struct curl_slist *head = NULL, *l;
  int i;
  for (i = 0; i < (expect ? 3 : 2); i++) {
    if ((l = dt_curl.slist_append(head, lines[i])) == NULL) {
      if (head) dt_curl.slist_free_all(head);
      return NULL;
    }
    head = l;
  }
  return head;
}

const char *dt_http_open(dt_http *h, const dt_http_opts *o) {
  struct curl_slist *l;
  CURL *c;
  int i;
  const char *err = dt_curl_open();   /* done by require already; cheap */

  if (err) return err;
  memset(h, 0, sizeof *h);
  h->max = o->max_body;
  h->pid = (long)getpid();
  h->sockets = h->own_sockets;
  h->nsockets = DT_SOCKETS_MAX;
  for (i = 0; i < DT_SOCKETS_MAX; i++) h->sockets[i] = -1;
  h->curl = c = dt_curl.easy_init();
  if (c == NULL) return "curl_easy_init failed";

  h->headers = constant_headers(0);
  h->headers_expect = constant_headers(1);
  if (h->headers == NULL || h->headers_expect == NULL) return "out of memory";
  h->token_node.data = h->token_line;
  if (o->user_agent && o->user_agent[strspn(o->user_agent, " ")] != '\0') {
    static const char name[] = "User-Agent: ";
    size_t n = strlen(o->user_agent) + 1;
    char *line = (char *)malloc(sizeof name - 1 + n);
    if (line == NULL) return "out of memory";
    memcpy(line, name, sizeof name - 1);
    memcpy(line + sizeof name - 1, o->user_agent, n);
    h->ua_node.data = line;
    /* A CONNECT gets it as with CURLOPT_USERAGENT, in the same place:
    ** before libcurl's Proxy-Connection, which the list must then carry. */
    if (!o->direct) {
      l = dt_curl.slist_append(NULL, line);
      if (l) h->proxy_headers = l;
      if (l) l = dt_curl.slist_append(h->proxy_headers, "Proxy-Connection: Keep-Alive");
      if (l == NULL) return "out of memory";
    } else {
      h->ua_listed = 1;
    }
  }

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
  /* No CURLOPT_MAXFILESIZE: with it libcurl reports an overflowing
  ** Content-Length as "too large"; on_header tells the two apart. */
  SET(CURLOPT_POST, 1L);
  h->list = -1;                      /* the first prepare sets it */
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)h);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)h);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  SET(CURLOPT_OPENSOCKETDATA, (void *)h);
  SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  SET(CURLOPT_CLOSESOCKETDATA, (void *)h);
  if (o->user_agent && !h->ua_listed) SET(CURLOPT_USERAGENT, o->user_agent);
  if (o->cafile && !add_cafile(c, o->cafile)) SET(CURLOPT_CAINFO, o->cafile);
  /* The variables as libcurl reads them (its detect_proxy and no_proxy
  ** lookups), but once: set_url picks the proxy of the URL's scheme. */
  h->proxy_scheme = DT_PROXY_FIXED;
  if (o->direct) {
    /* no proxy at all, whatever the environment says */
    SET(CURLOPT_NOPROXY, "*");
  } else {
    const char *np = env("no_proxy", "NO_PROXY", NULL, NULL);
    if (o->proxy) {
      SET(CURLOPT_PROXY, o->proxy);
      SET(CURLOPT_NOPROXY, np ? np : "");
    } else {
      /* http_proxy in lowercase only: a CGI program gets HTTP_PROXY from a
      ** request's "Proxy:" header (libcurl's reason, and ours) */
      if (!keep_env(&h->env_proxy[0], env("http_proxy", "all_proxy", "ALL_PROXY", NULL)) ||
          !keep_env(&h->env_proxy[1], env("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")) ||
          !keep_env(&h->no_proxy, np))
        return "out of memory";
      h->proxy_scheme = DT_PROXY_UNSET;
    }
  }
#undef SET
  /* libcurl before 7.80 has no pre-request callback: an at-most-once
  ** transfer then takes a fresh connection instead (dt_http_post). */
  h->prereq = dt_curl.easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq) == CURLE_OK &&
              dt_curl.easy_setopt(c, CURLOPT_PREREQDATA, (void *)h) == CURLE_OK;
  return NULL;
}

void dt_http_close(dt_http *h) {
  /* in a child of fork() that never called: see forked */
  if (h->curl && (h->pid == (long)getpid() || dt_http_disown(h)))
    dt_curl.easy_cleanup(h->curl);
  if (h->headers) dt_curl.slist_free_all(h->headers);
  if (h->headers_expect) dt_curl.slist_free_all(h->headers_expect);
  h->headers_expect = NULL;
  if (h->proxy_headers) dt_curl.slist_free_all(h->proxy_headers);
  free(h->ua_node.data);
  free(h->env_proxy[0]);
  free(h->env_proxy[1]);
  free(h->no_proxy);
  h->env_proxy[0] = h->env_proxy[1] = h->no_proxy = NULL;
  h->ua_node.data = NULL;
  h->proxy_headers = NULL;
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
      /* libcurl's limit on one header line (100 KiB) fails this way; a real
      ** shortage of memory in the middle of a head reads the same. */
      code = "transport.memory"; break;
    case CURLE_ABORTED_BY_CALLBACK:
      /* only on_prereq aborts: the re-send of an at-most-once request */
      if (h->once && h->attempts > 1) {
        code = "transport.closed"; retry = 1;
      }
      break;
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
  /* Refused heads; CURLE_TOO_LARGE (100, libcurl 8.6) is libcurl's own
  ** limit on a head. Neither is retried: the server would send it again. */
  if (h->bad_head || (int)rc == 100 || (rc == CURLE_OUT_OF_MEMORY && h->in_head)) {
    code = "transport.bad_response";
    retry = 0;
  }
  if (h->bad_head == DT_HEAD_FRAMING)
    out->message = "response framing refused (Content-Length or Transfer-Encoding)";
  else if (h->bad_head || (int)rc == 100 || (rc == CURLE_OUT_OF_MEMORY && h->in_head))
    out->message = "response head larger than 100 KiB";
  else if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && h->too_large))
    out->message = "response body larger than max_body";
  else if (rc == CURLE_ABORTED_BY_CALLBACK && h->once && h->attempts > 1)
    out->message = "the connection closed before an answer; the request was not sent again";
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

static int is_https(const char *url) {
  static const char https[] = "https:";
  size_t i;
  for (i = 0; i < sizeof https - 1; i++) {
    char c = url[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != https[i]) return 0;
  }
  return 1;
}

/* The header list of the next transfer (DT_LIST_* bits): the User-Agent,
** the token line when there is one, the constant headers. */
static void set_headers(dt_http *h, int list) {
  struct curl_slist *l = list & DT_LIST_EXPECT ? h->headers_expect : h->headers;
  if (list & DT_LIST_TOKEN) {
    h->token_node.next = l;
    l = &h->token_node;
  }
  if (h->ua_listed) {
    h->ua_node.next = l;
    l = &h->ua_node;
  }
  h->list = -1;                      /* set again next time if this fails */
  if (dt_curl.easy_setopt(h->curl, CURLOPT_HTTPHEADER, l) == CURLE_OK) h->list = list;
}

/* Where the User-Agent goes, for a client that may use a proxy: in the
** header list for https, and then in the proxy headers for the CONNECT.
** A plain-http request through a proxy (no CONNECT) would carry both
** lists, and libcurl puts its Proxy-Connection line before the custom
** headers: there CURLOPT_USERAGENT keeps the head as it always was. */
static void place_user_agent(dt_http *h, const char *url) {
  int https;
  const char *ua;
  if (h->proxy_headers == NULL || (https = is_https(url)) == h->ua_listed) return;
  ua = h->ua_node.data + sizeof "User-Agent: " - 1;
  if (dt_curl.easy_setopt(h->curl, CURLOPT_PROXYHEADER, https ? h->proxy_headers : NULL) != CURLE_OK ||
      dt_curl.easy_setopt(h->curl, CURLOPT_USERAGENT, https ? NULL : ua) != CURLE_OK)
    return;
  h->ua_listed = https;
  h->list = -1;                      /* the list changes */
}

/* The environment's proxy for the URL's scheme, for a client with neither
** the proxy option nor direct; without one, "*" in CURLOPT_NOPROXY says no
** proxy (and no variable to read) for any host. */
static void place_proxy(dt_http *h, const char *url) {
  int https;
  const char *p;
  if (h->proxy_scheme == DT_PROXY_FIXED || (https = is_https(url)) == h->proxy_scheme) return;
  p = h->env_proxy[https];
  h->proxy_scheme = DT_PROXY_UNSET;  /* set again next time if this fails */
  if (dt_curl.easy_setopt(h->curl, CURLOPT_PROXY, p) == CURLE_OK &&
      dt_curl.easy_setopt(h->curl, CURLOPT_NOPROXY, p ? (h->no_proxy ? h->no_proxy : "") : "*") == CURLE_OK)
    h->proxy_scheme = https;
}

/* Sets the URL only when it changed: libcurl copies it on every setopt,
** and a client nearly always calls the same few paths. */
static void set_url(dt_http *h, const char *url) {
  size_t n;
  if (h->url && strcmp(h->url, url) == 0) return;
  place_user_agent(h, url);
  place_proxy(h, url);
  free(h->url);
  h->url = NULL;
  /* Remembered only once libcurl has it: a failed setopt (out of memory)
  ** must be tried again next time, not skipped. */
  if (dt_curl.easy_setopt(h->curl, CURLOPT_URL, url) != CURLE_OK) return;
  n = strlen(url) + 1;
  h->url = (char *)malloc(n);        /* NULL: no copy, set it every time */
  if (h->url) memcpy(h->url, url, n);
}

int dt_http_prepare(dt_http *h, const char *url, const char *token, size_t tlen,
                    const char *body, size_t len, int once, dt_http_result *out) {
  static const size_t prefix = sizeof DT_TOKEN_HEADER - 1;
  int list = (token != NULL ? DT_LIST_TOKEN : 0) | (len > DT_EXPECT_MIN ? DT_LIST_EXPECT : 0);

  h->len = 0;
  h->too_large = 0;
  h->head_bytes = 0;
  h->in_head = 0;
  h->bad_head = DT_HEAD_OK;
  h->once = once;
  h->attempts = 0;
  h->tlen = 0;
  h->errbuf[0] = '\0';
  if (h->body) h->body[0] = '\0';
  h->hdr.request_id[0] = h->hdr.trace_id[0] = h->hdr.retry_after[0] = '\0';
  memset(out, 0, sizeof *out);

  /* After fork() the parent and the child would share one connection and
  ** read each other's answers. */
  if (h->pid != (long)getpid()) {
    const char *fail = forked(h);
    if (fail) {
      out->code = "transport.memory";
      out->message = fail;
      return 1;
    }
  }
  if (token != NULL) {
    memcpy(h->token_line, DT_TOKEN_HEADER, prefix);
    memcpy(h->token_line + prefix, token, tlen);
    h->token_line[prefix + tlen] = '\0';
    h->tlen = tlen;
  }
  set_url(h, url);                   /* first: it may change the header list */
  if (list != h->list) set_headers(h, list);
  if (h->method != DT_GET) {
    dt_curl.easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    dt_curl.easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  }
  /* Without on_prereq, only a fresh connection is sure not to be re-sent
  ** on: libcurl re-sends only over a reused one. */
  if (once && !h->prereq) dt_curl.easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
  return 0;
}

void dt_http_done(dt_http *h, CURLcode rc, dt_http_result *out) {
  static const size_t prefix = sizeof DT_TOKEN_HEADER - 1;
  long status = 0;
  if (h->once && !h->prereq) dt_curl.easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 0L);
  /* the token lives no longer than the transfer */
  if (h->tlen) memset(h->token_line + prefix, 0, h->tlen);
  h->tlen = 0;

  if (rc != CURLE_OK) {
    classify(h, rc, out);
    return;
  }
  dt_curl.easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200) {
    /* A final 1xx (101 Switching Protocols, unasked for) is no answer. */
    out->code = "transport.bad_response";
    out->message = "unexpected informational (1xx) answer";
    return;
  }
  out->status = status;
}

void dt_http_post(dt_http *h, const char *url, const char *token, size_t tlen,
                  const char *body, size_t len, int once, dt_http_result *out) {
  if (dt_http_prepare(h, url, token, tlen, body, len, once, out)) return;
  dt_http_done(h, dt_curl.easy_perform(h->curl), out);
}
