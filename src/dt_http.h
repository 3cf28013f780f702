/*
** dt_http.h: the transport. One POST over libcurl, nothing else.
**
** This layer knows no Lua, on purpose: it can be read, fuzzed and reused
** without a lua_State, and no Lua error can ever unwind through libcurl
** frames because nothing here can raise one.
*/
#ifndef DT_HTTP_H
#define DT_HTTP_H

#include <stddef.h>
#include <curl/curl.h>

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Response headers worth keeping: request ids for error reports and
** Retry-After for retry pacing. Request ids are kept whole up to
** DT_RID_KEEP bytes: the mapping redacts the secrets first and only then
** cuts them, so a cut here could leave a secret's prefix behind. */
#define DT_RID_KEEP 4096

typedef struct dt_http_headers {
  char request_id[DT_RID_KEEP + 1];   /* x-acs-request-id */
  char trace_id[DT_RID_KEEP + 1];     /* x-acs-trace-id */
  char retry_after[32];              /* Retry-After */
} dt_http_headers;

/* One response head (status line and header lines) may take this many
** bytes; more is a bad_response, the same limit as the cosocket transport. */
#define DT_HEAD_MAX (100 * 1024)

/* Sockets a handle may hold at once: its kept-alive connections (libcurl
** keeps a few) and the attempts of a connect in progress. */
#define DT_SOCKETS_MAX 16

typedef struct dt_http_opts {
  long timeout_ms;               /* whole transfer */
  long connect_timeout_ms;
  size_t max_body;               /* response bytes kept at most */
  const char *cafile;            /* trusted besides the system CAs (NULL: none) */
  const char *proxy;             /* NULL: libcurl's default (environment) */
  const char *user_agent;
  int direct;                    /* never any proxy, environment included */
} dt_http_opts;

/* One client connection: the easy handle (kept, so the TCP/TLS connection
** is reused between calls), the constant request headers and the response
** buffer. Embedded in a Lua userdata by the glue, which frees it in __gc. */
/* "x-acs-dingtalk-access-token: " and a token of up to DT_TOKEN_MAX bytes */
#define DT_TOKEN_HEADER "x-acs-dingtalk-access-token: "
#define DT_TOKEN_MAX 1024

typedef struct dt_http {
  CURL *curl;
  struct curl_slist *headers;    /* constant headers */
  /* The token header line lives here, in front of the constant headers, so
  ** the handle never points at memory that is gone; its token part is
  ** wiped after every transfer. */
  struct curl_slist token_node;
  char token_line[sizeof DT_TOKEN_HEADER + DT_TOKEN_MAX];
  /* The constant headers again with an empty Expect:, for a large body
  ** (DT_EXPECT_MIN): libcurl asks a small one for no "100 Continue". */
  struct curl_slist *headers_expect;
  int list;                      /* the DT_LIST_* bits of the list set; -1: none */
  /* "User-Agent: ..." (data NULL: none, or only blanks, which libcurl
  ** sends only as CURLOPT_USERAGENT). A constant header costs libcurl less
  ** than CURLOPT_USERAGENT, which it formats anew for every transfer. */
  struct curl_slist ua_node;
  int ua_listed;                 /* ua_node heads the header list: see set_url */
  /* The User-Agent for a CONNECT through a proxy, which CURLOPT_HTTPHEADER
  ** does not reach (NULL: the client never uses a proxy). */
  struct curl_slist *proxy_headers;
  /* The environment's proxies, read when the handle is made: libcurl
  ** reads up to seven variables at every transfer without CURLOPT_PROXY
  ** and CURLOPT_NOPROXY. [0] for http, [1] for https; NULL: none. */
  char *env_proxy[2];
  char *no_proxy;                /* no_proxy, else NO_PROXY; NULL: none */
  int proxy_scheme;              /* whose proxy is set: 0 http, 1 https, or DT_PROXY_* */
  int method;                    /* the method last set up (0: POST) */
  char *url;                     /* copy of the URL last set (NULL: none) */
  char *body;                    /* response body, NUL-terminated */
  size_t len, cap, max;
  int too_large;                 /* a callback refused the body's size */
  size_t head_bytes;             /* bytes of the current response head */
  int in_head;                   /* between a status line and its blank line */
  int bad_head;                  /* on_header stopped the transfer: see dt_http.c */
  int once;                      /* this transfer goes on the wire at most once */
  int attempts;                  /* requests libcurl set out to send in this transfer */
  int prereq;                    /* libcurl has CURLOPT_PREREQFUNCTION */
  size_t tlen;                   /* bytes of token in token_line (wiped after) */
  long pid;                      /* the process that opened the connections */
  /* The sockets the handle opened and has not closed (-1: free): its own
  ** table, or one a dt_multi shares between its slots (whose connections
  ** sit in the multi's pool, and any slot may close one another opened). */
  int *sockets;
  int nsockets;
  int own_sockets[DT_SOCKETS_MAX];
  dt_http_headers hdr;
  char errbuf[CURL_ERROR_SIZE];
} dt_http;

/* The header list of a transfer: with the token line, with Expect:. */
enum { DT_LIST_TOKEN = 1, DT_LIST_EXPECT = 2 };

/* Bodies above this many bytes get the empty Expect: header. libcurl 7.88
** asks for "100 Continue" above 1 MiB; older versions did above 1 KiB. */
#define DT_EXPECT_MIN 1024

/* proxy_scheme: none set yet; set once for good (the proxy option, direct) */
enum { DT_PROXY_UNSET = -1, DT_PROXY_FIXED = -2 };

/* Outcome of a transfer. On a transport failure `code` is a stable local
** code ("transport.timeout", ...) and `status` is 0; otherwise `code` is
** NULL and the response sits in the dt_http buffers. */
typedef struct dt_http_result {
  long status;
  const char *code;
  const char *message;           /* points into errbuf or a static string */
  int retryable;
} dt_http_result;

/* Returns 0 on success, or a static message on failure (the handle is then
** safe to pass to dt_http_close). */
const char *dt_http_open(dt_http *h, const dt_http_opts *o);

/* Idempotent: the glue calls it from both close() and __gc. */
void dt_http_close(dt_http *h);

/* POSTs `body` to `url`, with the access-token header when `token` is not
** NULL (NULL: the access-token call itself). The token, 1..DT_TOKEN_MAX
** bytes, must not contain CR or LF: the caller checks. `body` must stay
** alive for the call. `once`: the request goes on the wire at most once;
** libcurl re-sends a request on its own when a reused connection dies
** before the answer, and such a transfer fails as transport.closed instead.
** In a child of fork() the first call (or close) leaves the connections of
** the parent alone and opens new ones. */
void dt_http_post(dt_http *h, const char *url, const char *token, size_t tlen,
                  const char *body, size_t len, int once, dt_http_result *out);

/* The same transfer in two halves, for a caller that runs the handle
** itself (dt_multi: curl_multi_add_handle instead of curl_easy_perform).
** dt_http_prepare sets everything up; it returns 0 when the handle is ready
** to run, or 1 when the transfer already failed (out is then filled, and
** dt_http_done must not be called). `body` must stay alive until
** dt_http_done. dt_http_done takes libcurl's result for the transfer, wipes
** the token and classifies the outcome exactly as dt_http_post does. */
int dt_http_prepare(dt_http *h, const char *url, const char *token, size_t tlen,
                    const char *body, size_t len, int once, dt_http_result *out);
void dt_http_done(dt_http *h, CURLcode rc, dt_http_result *out);

/* In a child of fork(): makes every socket the handle holds harmless (see
** dt_http.c). Returns 0 when one of them could not be. */
int dt_http_disown(dt_http *h);

/* The methods the API uses; DT_POST is the default of every request. */
enum { DT_POST = 0, DT_GET, DT_PUT, DT_DELETE, DT_PATCH };

/* Makes the next dt_http_post send `method` (GET sends no body). */
void dt_http_method(dt_http *h, int method);

/* Drops a large response buffer so an odd big answer does not pin memory
** for the life of the client. */
void dt_http_trim(dt_http *h);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
