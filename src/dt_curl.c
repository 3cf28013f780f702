/*
** dt_curl.c: opens libcurl with lazy binding (see dt_curl.h for why).
*/
/* dlopen and pthread_once are POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dt_curl.h"

dt_curl_api dt_curl;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *failure;   /* set by open_once */
static char failure_buf[256];

static const char *fail_with(const char *what, const char *detail) {
  snprintf(failure_buf, sizeof failure_buf, "%s: %s", what, detail ? detail : "unknown error");
  return failure_buf;
}

/* dlsym returns an object pointer; POSIX guarantees a function pointer has
** the same size and representation, and memcpy says so without the cast
** ISO C forbids. The typedef stops the build where that does not hold. */
typedef char dt_fnptr_is_pointer_sized[sizeof(void (*)(void)) == sizeof(void *) ? 1 : -1];

#define LOAD(field, name)                                                \
  do {                                                                   \
    void *sym = dlsym(lib, name);                                        \
    if (sym == NULL) return fail_with("libcurl lacks " name, dlerror()); \
    memcpy(&api.field, &sym, sizeof sym);                                \
  } while (0)

static const char *load(void) {
  static const char *const names[] = {DT_LIBCURL_NAMES};
  dt_curl_api api;
  const char *err = NULL;
  void *lib = NULL;
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    lib = dlopen(names[i], RTLD_LAZY | RTLD_LOCAL);
    if (lib != NULL) break;
    /* the first name's reason is the one worth reporting */
    if (i == 0) err = fail_with("cannot open libcurl", dlerror());
  }
  if (lib == NULL) return err;
  /* Never closed: curl_global_init is never undone either (other users of
  ** libcurl in the process may need it). */
  LOAD(global_init, "curl_global_init");
  LOAD(version_info, "curl_version_info");
  LOAD(easy_init, "curl_easy_init");
  LOAD(easy_duphandle, "curl_easy_duphandle");
  LOAD(easy_setopt, "curl_easy_setopt");
  LOAD(easy_perform, "curl_easy_perform");
  LOAD(easy_getinfo, "curl_easy_getinfo");
  LOAD(easy_strerror, "curl_easy_strerror");
  LOAD(easy_cleanup, "curl_easy_cleanup");
  LOAD(slist_append, "curl_slist_append");
  LOAD(slist_free_all, "curl_slist_free_all");
  LOAD(multi_init, "curl_multi_init");
  LOAD(multi_setopt, "curl_multi_setopt");
  LOAD(multi_add_handle, "curl_multi_add_handle");
  LOAD(multi_remove_handle, "curl_multi_remove_handle");
  LOAD(multi_perform, "curl_multi_perform");
  LOAD(multi_wait, "curl_multi_wait");
  LOAD(multi_info_read, "curl_multi_info_read");
  LOAD(multi_cleanup, "curl_multi_cleanup");
  {  /* optional: libcurl 7.66 */
    void *sym = dlsym(lib, "curl_multi_poll");
    if (sym) memcpy(&api.multi_poll, &sym, sizeof sym);
    else api.multi_poll = NULL;
  }
  /* Once per process, here: it is not thread-safe before libcurl 7.84, and
  ** pthread_once makes this the only thread running it. */
  if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return "curl_global_init failed";
  dt_curl = api;
  return NULL;
}

static void open_once(void) {
  failure = load();
}

const char *dt_curl_open(void) {
  if (pthread_once(&once, open_once) != 0) return "pthread_once failed";
  return failure;
}
