/*
** dt_error.c: building, cleaning and printing error tables.
*/
#include <string.h>

#include "dt_error.h"

/* A secret shorter than this cannot be told apart from ordinary text (real
** tokens are 32 characters); redacting it would shred every message. */
#define DT_SECRET_MIN 6

/* Length of a well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t need, i;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;        /* no overlong forms */
    if (c == 0xED) hi = 0x9F;        /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;        /* nothing past U+10FFFF */
  } else
    return 0;
  if (n < need) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (i = 2; i < need; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return need;
}

/* A character that reorders or breaks a log line although it is valid
** UTF-8: C1 controls (U+0080..U+009F: NEL, CSI, ...), LINE and PARAGRAPH
** SEPARATOR (U+2028/9) and the bidi controls (U+061C, U+200E/F,
** U+202A..U+202E, U+2066..U+2069). s is a well-formed sequence of n bytes. */
static int unsafe_char(const unsigned char *s, size_t n) {
  if (n == 2)
    return (s[0] == 0xC2 && s[1] <= 0x9F) || (s[0] == 0xD8 && s[1] == 0x9C);
  if (n == 3 && s[0] == 0xE2) {
    if (s[1] == 0x80)
      return s[2] == 0x8E || s[2] == 0x8F || (s[2] >= 0xA8 && s[2] <= 0xAE);
    if (s[1] == 0x81) return s[2] >= 0xA6 && s[2] <= 0xA9;
  }
  return 0;
}

static uint64_t window(const unsigned char *p) {
  uint64_t w;
  memcpy(&w, p, sizeof w);
  return w;
}

/* In-place heapsort: qsort may allocate (glibc's does for arrays this big). */
static void sift(uint64_t *a, size_t i, size_t n) {
  for (;;) {
    size_t c = 2 * i + 1;
    uint64_t t;
    if (c >= n) return;
    if (c + 1 < n && a[c + 1] > a[c]) c++;
    if (a[i] >= a[c]) return;
    t = a[i];
    a[i] = a[c];
    a[c] = t;
    i = c;
  }
}

static void sort_windows(uint64_t *a, size_t n) {
  size_t i;
  if (n < 2) return;
  for (i = n / 2; i-- > 0;) sift(a, i, n);
  for (i = n - 1; i > 0; i--) {
    uint64_t t = a[0];
    a[0] = a[i];
    a[i] = t;
    sift(a, 0, i);
  }
}

void dt_redactor_init(dt_redactor *r, const dt_secrets *secrets) {
  int k;
  size_t i, n = 0;
  r->n = 0;
  r->all = 0;
  for (k = 0; k < DT_SECRETS_MAX; k++) {
    const unsigned char *s = secrets ? (const unsigned char *)secrets->s[k] : NULL;
    size_t sl = s ? secrets->len[k] : 0;
    r->whole[k] = NULL;
    r->wlen[k] = 0;
    if (sl < DT_SECRET_MIN) continue;
    if (sl > DT_SECRET_MAX) {
      r->all = 1;
      continue;
    }
    if (sl < DT_WINDOW) {
      r->whole[k] = (const char *)s;
      r->wlen[k] = sl;
      continue;
    }
    for (i = 0; i + DT_WINDOW <= sl; i++) r->win[n++] = window(s + i);
  }
  sort_windows(r->win, n);
  for (i = 0; i < n; i++)             /* drop repeats: "aaaa..." is one window */
    if (r->n == 0 || r->win[r->n - 1] != r->win[i]) r->win[r->n++] = r->win[i];
}

static int indexed(const dt_redactor *r, uint64_t w) {
  size_t lo = 0, hi = r->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r->win[mid] < w) lo = mid + 1;
    else hi = mid;
  }
  return lo < r->n && r->win[lo] == w;
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A body that shows a request back (a proxy page echoing the token call)
** holds the secret as JSON wrote it: "\/" for "/", "\u0041" for "A". The 8
** bytes p[0..n) reads as once such escapes are undone go to w; returns how
** many bytes of p they take, or 0 when they hold no escape (the plain
** window covers that case). */
static size_t unescaped(const unsigned char *p, size_t n, unsigned char *w) {
  size_t i = 0, k = 0;
  int esc = 0;
  while (k < DT_WINDOW) {
    if (i >= n) return 0;
    if (p[i] == '\\' && i + 1 < n) {
      unsigned char c = p[i + 1];
      const char *from = "/\"\\bfnrt", *to = "/\"\\\b\f\n\r\t";
      const char *f = c ? strchr(from, c) : NULL;
      if (f) {
        w[k++] = (unsigned char)to[f - from];
        i += 2;
        esc = 1;
        continue;
      }
      if (c == 'u' && i + 5 < n && p[i + 2] == '0' && p[i + 3] == '0' &&
          hexval(p[i + 4]) >= 0 && hexval(p[i + 5]) >= 0) {
        w[k++] = (unsigned char)(hexval(p[i + 4]) * 16 + hexval(p[i + 5]));
        i += 6;
        esc = 1;
        continue;
      }
    }
    w[k++] = p[i++];
  }
  return esc ? i : 0;
}

/* How many bytes from p (n left) a secret match starting there covers, or 0. */
static size_t match_at(const dt_redactor *r, const unsigned char *p, size_t n) {
  size_t m = 0;
  int k;
  if (n >= DT_WINDOW && r->n) {
    unsigned char w[DT_WINDOW];
    size_t e;
    if (indexed(r, window(p))) m = DT_WINDOW;
    if ((e = unescaped(p, n, w)) > m && indexed(r, window(w))) m = e;
  }
  for (k = 0; k < DT_SECRETS_MAX; k++)
    if (r->whole[k] && n >= r->wlen[k] && r->wlen[k] > m &&
        memcmp(p, r->whole[k], r->wlen[k]) == 0)
      m = r->wlen[k];
  return m;
}

/* The first redacted run starting in [from, limit) of p[0..len): its bounds
** in *start, *end (matches that overlap or touch merge into one run), and 1;
** 0 when none starts there. */
static int find_run(const dt_redactor *r, const unsigned char *p, size_t len,
                    size_t from, size_t limit, size_t *start, size_t *end) {
  size_t i, j, e;
  for (i = from; i < limit; i++) {
    size_t m = match_at(r, p + i, len - i);
    if (m == 0) continue;
    e = i + m;
    for (j = i + 1; j <= e && j < len; j++) {
      m = match_at(r, p + j, len - j);
      if (j + m > e) e = j + m;
    }
    *start = i;
    *end = e;
    return 1;
  }
  return 0;
}

static const char redacted[] = "[redacted]";
#define REDACTED_LEN (sizeof redacted - 1)

void dt_push_redacted(lua_State *L, const char *s, size_t len,
                      const dt_secrets *secrets) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, rs, re;
  dt_redactor r;
  luaL_Buffer b;
  dt_redactor_init(&r, secrets);
  if (r.all && len) {
    lua_pushstring(L, redacted);
    return;
  }
  luaL_buffinit(L, &b);
  while (find_run(&r, p, len, i, len, &rs, &re)) {
    luaL_addlstring(&b, s + i, rs - i);
    luaL_addlstring(&b, redacted, REDACTED_LEN);
    i = re;
  }
  luaL_addlstring(&b, s + i, len - i);
  luaL_pushresult(&b);
}

size_t dt_clean_r(char *out, const char *s, size_t len, size_t max,
                  const dt_redactor *r) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, o = 0, n;
  size_t searched = 0;          /* no run starts in [i, searched) */
  size_t rs = 0, re = 0;
  int run = 0;                  /* [rs, re) is the next run */
  if (max > DT_CLEAN_MAX) max = DT_CLEAN_MAX;
  if (r->all && len) {                   /* see DT_SECRET_MAX */
    s = redacted;
    p = (const unsigned char *)s;
    len = REDACTED_LEN;
    r = NULL;
  }
  while (i < len) {
    /* Look ahead only as far as the next character reaches: the text past
    ** the cap is never searched, except to find where a run ends. */
    if (r && !run && searched < len) {
      size_t limit = i + 4 < len ? i + 4 : len;
      if (searched < i) searched = i;
      if (searched < limit) {
        run = find_run(r, p, len, searched, limit, &rs, &re);
        searched = limit;
      }
    }
    if (run && i == rs) {
      if (o + REDACTED_LEN > max) {            /* the marker is never cut */
        memcpy(out + o, "...", 3);
        o += 3;
        break;
      }
      memcpy(out + o, redacted, REDACTED_LEN);
      o += REDACTED_LEN;
      i = searched = re;
      run = 0;
      continue;
    }
    /* A character never spans the start of a run: its bytes before the
    ** run are cleaned on their own (as invalid UTF-8, if cut). */
    n = utf8_len(p + i, (run ? rs : len) - i);
    if (o + (n ? n : 1) > max) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    if (n == 0) {                   /* a stray byte: keep the text printable */
      out[o++] = '?';
      n = 1;
    } else if ((n == 1 && (p[i] < 0x20 || p[i] == 0x7F)) || unsafe_char(p + i, n)) {
      out[o++] = ' ';               /* no CR/LF: one error, one log line */
    } else {
      memcpy(out + o, s + i, n);
      o += n;
    }
    i += n;
  }
  out[o] = '\0';
  return o;
}

size_t dt_clean(char *out, const char *s, size_t len, size_t max,
                const dt_secrets *secrets) {
  dt_redactor r;
  dt_redactor_init(&r, secrets);
  return dt_clean_r(out, s, len, max, &r);
}

size_t dt_clean_rid_r(char *out, const char *s, size_t len, const dt_redactor *r) {
  char buf[DT_CLEAN_MAX + DT_CLEAN_SLACK];
  size_t n = dt_clean_r(buf, s, len, DT_RID_MAX, r);
  if (n > DT_RID_MAX)                  /* cut: room for the "..." too */
    n = dt_clean_r(buf, s, len, DT_RID_MAX - 3, r);
  memcpy(out, buf, n + 1);
  return n;
}

size_t dt_clean_rid(char *out, const char *s, size_t len, const dt_secrets *secrets) {
  dt_redactor r;
  dt_redactor_init(&r, secrets);
  return dt_clean_rid_r(out, s, len, &r);
}

void dt_push_clean_r(lua_State *L, const char *s, size_t len, size_t max,
                     const dt_redactor *r) {
  char buf[DT_CLEAN_MAX + DT_CLEAN_SLACK];
  size_t n = dt_clean_r(buf, s, len, max, r);
  lua_pushlstring(L, buf, n);
}

void dt_push_clean(lua_State *L, const char *s, size_t len, size_t max,
                   const dt_secrets *secrets) {
  dt_redactor r;
  dt_redactor_init(&r, secrets);
  dt_push_clean_r(L, s, len, max, &r);
}

void dt_error_setclean_r(lua_State *L, const char *k, const char *s, size_t len,
                         size_t max, const dt_redactor *r) {
  dt_push_clean_r(L, s, len, max, r);
  lua_setfield(L, -2, k);
}

void dt_error_setclean(lua_State *L, const char *k, const char *s, size_t len,
                       size_t max, const dt_secrets *secrets) {
  dt_push_clean(L, s, len, max, secrets);
  lua_setfield(L, -2, k);
}

void dt_error_push(lua_State *L, const char *kind, const char *code,
                   const char *message, long status, int retryable) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  if (message) {
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
  }
  if (status) {
    lua_pushinteger(L, (lua_Integer)status);
    lua_setfield(L, -2, "status");
  }
  lua_pushboolean(L, retryable);
  lua_setfield(L, -2, "retryable");
  luaL_getmetatable(L, DT_ERROR_MT);
  lua_setmetatable(L, -2);
}

/* Field `k` of the table at 1 as text, or NULL. The value stays on the
** stack: a number converted by lua_tostring is owned by its stack slot. */
static const char *field(lua_State *L, const char *k) {
  lua_getfield(L, 1, k);
  return (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
             ? lua_tostring(L, -1) : NULL;
}

/* "dingtalk: CODE (HTTP 400): MESSAGE [request ID]" */
static int error_tostring(lua_State *L) {
  const char *code, *message, *status, *rid, *attempts;
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  code = field(L, "code");
  message = field(L, "message");
  status = field(L, "status");
  rid = field(L, "request_id");
  attempts = field(L, "attempts");
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "dingtalk: ");
  luaL_addstring(&b, code ? code : "error");
  if (status) {
    luaL_addstring(&b, " (HTTP ");
    luaL_addstring(&b, status);
    luaL_addchar(&b, ')');
  }
  if (message) {
    luaL_addstring(&b, ": ");
    luaL_addstring(&b, message);
  }
  if (rid) {
    luaL_addstring(&b, " [request ");
    luaL_addstring(&b, rid);
    luaL_addchar(&b, ']');
  }
  /* "(4 attempts)", not "after 4 attempts": the message may say "after"
  ** already ("timed out after 10001 milliseconds ...") */
  if (attempts && strcmp(attempts, "1") != 0) {
    luaL_addstring(&b, " (");
    luaL_addstring(&b, attempts);
    luaL_addstring(&b, " attempts)");
  }
  luaL_pushresult(&b);
  return 1;
}

void dt_error_init(lua_State *L) {
  luaL_newmetatable(L, DT_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
