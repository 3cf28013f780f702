/*
** bench/floor.c: the floor. The same POST /v1.0/robot/plugins/clear the
** dingtalk module makes, from plain C with libcurl, one easy handle reused.
**
** Same request bytes (libcurl's Host, then User-Agent, the token header,
** Content-Type and Accept from one constant header list built once, then
** libcurl's Content-Length, the same JSON body), driven the cheapest way
** for those bytes: the User-Agent in the list, no empty Expect: (nothing
** to stop for a body this small), no proxy (so no proxy variables read at
** each transfer). The same options src/dt_http.c sets otherwise:
** NOSIGNAL, error buffer, whole and connect timeouts, TLS verification,
** no redirects, http/https only, a max file size, POST, TCP keepalive and
** a write callback appending to a growing buffer. Not copied: the
** module's header, pre-request and socket callbacks (request ids for
** errors, at-most-once, fork safety) and its JSON decode; the floor checks
** the answer by comparing the body with {"result":true} and the status
** with 200.
**
**   floor ENDPOINT CALLS [--lat] [--new] [--mem N,N,...] [--quiet]
**         [--ua STRING] [--token STRING] [--robot STRING]
**
** Prints one JSON line, the same fields bench/module.lua prints.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <curl/curl.h>

#define MAX_MEM_POINTS 8

typedef struct buf {
  char *p;
  size_t len, cap, max;
} buf;

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  buf *b = (buf *)ud;
  size_t add = size * n;
  if (add > b->max - b->len) return 0;
  if (b->len + add + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    char *p;
    while (cap < b->len + add + 1) cap *= 2;
    p = (char *)realloc(b->p, cap);
    if (p == NULL) return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, add);
  b->len += add;
  b->p[b->len] = '\0';
  return add;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* VmRSS or VmHWM from /proc/self/status, in kB (-1 if unreadable). */
static long proc_kb(const char *key) {
  char line[256];
  long v = -1;
  size_t n = strlen(key);
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array (the same rule as module.lua). */
static double pct(const double *v, long n, double p) {
  long k = (long)(p * (double)n + 0.999999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

static CURL *open_handle(buf *b, char *errbuf, const char *url,
                         struct curl_slist *headers, const char *body) {
  CURL *c = curl_easy_init();
  if (c == NULL) return NULL;
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)b->max);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, (void *)b);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  /* No proxy for any host: without it libcurl reads the proxy variables
  ** of the environment at every transfer. */
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
  return c;
}

static void usage(void) {
  fprintf(stderr, "usage: floor ENDPOINT CALLS [--lat] [--new] [--mem N,N,...] "
                  "[--quiet] [--ua S] [--token S] [--robot S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *endpoint, *ua = "lua-dingtalk/0.1.0 (Lua 5.4; libcurl/7.88.1)";
  const char *token = "bench-token-0123456789abcdef", *robot = "dingbench";
  long calls, i, mem_at[MAX_MEM_POINTS], mem_kb[MAX_MEM_POINTS];
  int lat = 0, fresh = 0, quiet = 0, nmem = 0, a, m;
  char url[1024], body[512], tokline[1200], ualine[1200], errbuf[CURL_ERROR_SIZE];
  struct curl_slist *headers = NULL;
  double *lats = NULL, t0, t1, c0, c1, wall;
  buf b = {NULL, 0, 0, 1024 * 1024};
  CURL *c = NULL;

  if (argc < 3) usage();
  endpoint = argv[1];
  calls = strtol(argv[2], NULL, 10);
  if (calls < 1) usage();
  for (a = 3; a < argc; a++) {
    if (strcmp(argv[a], "--lat") == 0) lat = 1;
    else if (strcmp(argv[a], "--new") == 0) fresh = 1;
    else if (strcmp(argv[a], "--quiet") == 0) quiet = 1;
    else if (a + 1 < argc && strcmp(argv[a], "--ua") == 0) ua = argv[++a];
    else if (a + 1 < argc && strcmp(argv[a], "--token") == 0) token = argv[++a];
    else if (a + 1 < argc && strcmp(argv[a], "--robot") == 0) robot = argv[++a];
    else if (a + 1 < argc && strcmp(argv[a], "--mem") == 0) {
      char *s = argv[++a], *end;
      while (*s && nmem < MAX_MEM_POINTS) {
        mem_at[nmem++] = strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s) usage();
      }
    } else usage();
  }
  snprintf(url, sizeof url, "%s/v1.0/robot/plugins/clear", endpoint);
  snprintf(body, sizeof body, "{\"robotCode\":\"%s\"}", robot);
  snprintf(tokline, sizeof tokline, "x-acs-dingtalk-access-token: %s", token);
  snprintf(ualine, sizeof ualine, "User-Agent: %s", ua);

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
  /* Every constant header in the one list, the User-Agent first, where
  ** libcurl puts its own: CURLOPT_USERAGENT would have libcurl format it
  ** into a new string on every transfer. */
  headers = curl_slist_append(headers, ualine);
  headers = curl_slist_append(headers, tokline);
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Accept: application/json");
  /* No empty Expect: line: it changes nothing on the wire for a body this
  ** small (libcurl asks for "100 Continue" above 1 MiB), and every header
  ** of the list costs libcurl a comparison in each of its header checks. */
  if (headers == NULL) return 1;
  if (lat && (lats = (double *)malloc(sizeof *lats * (size_t)calls)) == NULL) return 1;
  if (!fresh && (c = open_handle(&b, errbuf, url, headers, body)) == NULL) return 1;

  m = 0;
  t0 = now();
  c0 = cpu();
  for (i = 0; i < calls; i++) {
    double s = lat ? now() : 0;
    long status = 0;
    CURLcode rc;
    if (fresh && (c = open_handle(&b, errbuf, url, headers, body)) == NULL) return 1;
    b.len = 0;
    errbuf[0] = '\0';
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      fprintf(stderr, "floor: call %ld: curl error %d: %s\n", i + 1, (int)rc,
              errbuf[0] ? errbuf : curl_easy_strerror(rc));
      return 1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || b.len != 15 || memcmp(b.p, "{\"result\":true}", 15) != 0) {
      fprintf(stderr, "floor: call %ld: unexpected answer %ld %.*s\n", i + 1,
              status, (int)b.len, b.p ? b.p : "");
      return 1;
    }
    if (fresh) {
      curl_easy_cleanup(c);
      c = NULL;
    }
    if (lat) lats[i] = now() - s;
    if (m < nmem && i + 1 == mem_at[m]) mem_kb[m++] = proc_kb("VmRSS");
  }
  c1 = cpu();
  t1 = now();
  wall = t1 - t0;

  if (!quiet) {
    printf("{\"impl\":\"floor\",\"mode\":\"%s\",\"calls\":%ld,\"wall_s\":%.6f,"
           "\"cps\":%.1f,\"cpu_us_per_call\":%.3f,",
           fresh ? "new" : "reuse", calls, wall, (double)calls / wall,
           (c1 - c0) * 1e6 / (double)calls);
    if (lat) {
      qsort(lats, (size_t)calls, sizeof *lats, cmp_double);
      printf("\"p50_us\":%.1f,\"p99_us\":%.1f,", pct(lats, calls, 0.50) * 1e6,
             pct(lats, calls, 0.99) * 1e6);
    }
    printf("\"mem_kb\":{");
    for (a = 0; a < m; a++) printf("%s\"%ld\":%ld", a ? "," : "", mem_at[a], mem_kb[a]);
    printf("},\"rss_kb\":%ld,\"hwm_kb\":%ld}\n", proc_kb("VmRSS"), proc_kb("VmHWM"));
  }
  if (c) curl_easy_cleanup(c);
  curl_slist_free_all(headers);
  free(b.p);
  free(lats);
  curl_global_cleanup();
  return 0;
}
