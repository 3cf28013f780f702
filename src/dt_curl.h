/*
** dt_curl.h: the libcurl functions the core calls, reached through a table
** that dt_curl_open fills once per process.
**
** Why not link libcurl: Lua's loader opens a C module with RTLD_NOW, and
** the dynamic linker applies that mode to everything the module pulls in.
** Linked, libcurl and its ~30 libraries (OpenSSL, GnuTLS, Kerberos, LDAP,
** ...) would have every symbol bound at require time, nearly all of them
** never called: ~3M instructions, a fifth of a cold start (bench/README.md).
** Opened here with RTLD_LAZY, only what a call reaches gets bound.
*/
#ifndef DT_CURL_H
#define DT_CURL_H

#include <curl/curl.h>

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* The names tried, in order, unless the build names one library
** (-DDT_LIBCURL=\"...\"): the soname libcurl has kept since 7.16; the
** development link, which is the flavour the headers came with; and
** Debian's GnuTLS flavour, for a machine that has only that one. */
#if defined(DT_LIBCURL)
#define DT_LIBCURL_NAMES DT_LIBCURL
#elif defined(__APPLE__)
#define DT_LIBCURL_NAMES "libcurl.4.dylib", "libcurl.dylib"
#else
#define DT_LIBCURL_NAMES "libcurl.so.4", "libcurl.so", "libcurl-gnutls.so.4"
#endif

/* The prototypes are libcurl's own (curl/curl.h). */
typedef struct dt_curl_api {
  CURLcode (*global_init)(long flags);
  curl_version_info_data *(*version_info)(CURLversion stamp);
  CURL *(*easy_init)(void);
  CURL *(*easy_duphandle)(CURL *curl);
  CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
  CURLcode (*easy_perform)(CURL *curl);
  CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
  const char *(*easy_strerror)(CURLcode code);
  void (*easy_cleanup)(CURL *curl);
  struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
  void (*slist_free_all)(struct curl_slist *list);
  /* The multi interface (dt_multi.c). multi_poll (7.66) may be NULL: then
  ** dt_multi waits with multi_wait, which returns at once with no socket. */
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
  CURLMcode (*multi_add_handle)(CURLM *multi, CURL *curl);
  CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *curl);
  CURLMcode (*multi_perform)(CURLM *multi, int *running);
  CURLMcode (*multi_poll)(CURLM *multi, struct curl_waitfd extra[],
                          unsigned int extra_nfds, int timeout_ms, int *numfds);
  CURLMcode (*multi_wait)(CURLM *multi, struct curl_waitfd extra[],
                          unsigned int extra_nfds, int timeout_ms, int *numfds);
  CURLMsg *(*multi_info_read)(CURLM *multi, int *msgs_in_queue);
  CURLMcode (*multi_cleanup)(CURLM *multi);
} dt_curl_api;

/* Filled by dt_curl_open; read-only after it returned NULL. */
extern dt_curl_api dt_curl;

/* Opens libcurl, resolves the table and runs curl_global_init, once per
** process (thread-safe). Returns NULL, or a message saying what failed;
** the same message on every later call. */
const char *dt_curl_open(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
