/*
** fuzz/asan_preload.c: preloaded right after the ASan runtime into the one
** interpreter that make check-asan (tools/memcheck asan) runs.
**
** It drops LD_PRELOAD from the environment once the process is up, so the
** children the suite starts (sh, nginx, curl, the bin/dingtalk command
** under a plain lua5.4) run as usual, without the sanitizer:
**   - they are not the module (the children that do load the module get the
**     regular build/lua5.4 one: fuzz/asan_helper.lua keeps the sanitized
**     build out of package.cpath);
**   - with the ASan runtime loaded, a process that loads p11-kit (curl;
**     anything loading libcurl -> librtmp -> gnutls) and calls setlocale()
**     deadlocks on glibc's setlocale lock (Debian 12, gcc 12 and clang 14
**     runtimes alike): curl would hang the suite.
*/
#include <stdlib.h>

__attribute__((constructor)) static void dt_asan_noinherit(void) {
  unsetenv("LD_PRELOAD");
}
