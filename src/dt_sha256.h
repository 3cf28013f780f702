/*
** dt_sha256.h: SHA-256 (FIPS 180-4), for the shared token cache's key.
**
** The cache key names an app without holding its secret: a hash of the
** endpoint, the app key and the secret. Lua 5.1 and LuaJIT's portable
** subset have no 32-bit operators, so the hash is computed here.
*/
#ifndef DT_SHA256_H
#define DT_SHA256_H

#include <stddef.h>
#include "dt_compat.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* out: the 32-byte digest of data[0..len). Allocates nothing. */
void dt_sha256(const void *data, size_t len, unsigned char out[32]);

/* core.sha256(s) -> the digest of s as 64 lowercase hex digits. */
int dt_sha256_lua(lua_State *L);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
