/*
 * redisurl.c - turns REDIS_URL into host, port, socket path, credentials and db.
 *
 * Three forms reach us from the API's .env files:
 *   redis://[[user]:password@]host[:port][/db][?db=N&password=P]
 *   unix://[[user]:password@]/path/to.sock[?db=N&password=P]
 *   host[:port][,password=P][,user=U][,defaultDatabase=N][,...]   (StackExchange.Redis)
 * Userinfo is percent-decoded, as redis-py does, so a password may hold any byte.
 * StackExchange options that only tune the .NET client (abortConnect, connectTimeout,
 * ...) are ignored; ssl=true is refused like rediss://, because hiredis 0.14 has no
 * TLS and falling back to plaintext would send the password in the clear.
 *
 * Error messages never contain the password, nor any other part of the URL: a
 * malformed URL can have its secret anywhere, so they name the part that is wrong.
 * rurl_redact() works on the text alone, without parsing, so that it also hides the
 * password of a URL that rurl_parse() refuses; when in doubt it hides more.
 */
#include "redisurl.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_PORT 6379

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes len bytes at s into dst; -1 if it does not fit or an escape is bad. */
static int decode(char *dst, size_t size, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == '\0' || n + 1 >= size)
            return -1;
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return 0;
}

/* A decimal number of len bytes in lo..hi, digits only (no sign, no spaces). */
static int parse_num(const char *s, size_t len, long lo, long hi, int *out)
{
    long v = 0;

    if (len == 0 || len > 10)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int host_char(int c, int bracketed)
{
    if (isalnum(c) || c == '.' || c == '-' || c == '_')
        return 1;
    return bracketed && (c == ':' || c == '%');
}

static int copy_host(struct rurl *out, const char *s, size_t len, int bracketed)
{
    if (len == 0 || len >= sizeof out->host)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!host_char((unsigned char)s[i], bracketed))
            return -1;
    memcpy(out->host, s, len);
    out->host[len] = '\0';
    return 0;
}

/* host, host:port, [v6], [v6]:port; len bytes at s. */
static int parse_hostport(const char *s, size_t len, struct rurl *out, char *err, size_t errlen)
{
    const char *end = s + len, *port = NULL;

    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || copy_host(out, s + 1, (size_t)(close - s - 1), 1) < 0)
            return fail(err, errlen, "bad host: an IPv6 address goes in brackets, [::1]:6379");
        if (close + 1 < end && close[1] != ':')
            return fail(err, errlen, "bad host: expected ':port' after ']'");
        port = close + 1 < end ? close + 2 : NULL;
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return fail(err, errlen, "bad host: an IPv6 address goes in brackets, [::1]:6379");
        size_t hlen = colon ? (size_t)(colon - s) : len;
        if (hlen == 0)
            return fail(err, errlen, "missing host");
        if (copy_host(out, s, hlen, 0) < 0)
            return fail(err, errlen, "bad host: letters, digits, '.', '-' and '_' only");
        port = colon ? colon + 1 : NULL;
    }
    out->port = DEFAULT_PORT;
    if (port && parse_num(port, (size_t)(end - port), 1, 65535, &out->port) < 0)
        return fail(err, errlen, "bad port: must be a number from 1 to 65535");
    return 0;
}

/* user:password or :password or user, len bytes at s. */
static int parse_userinfo(const char *s, size_t len, struct rurl *out, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    size_t ulen = colon ? (size_t)(colon - s) : len;

    if (decode(out->user, sizeof out->user, s, ulen) < 0)
        return fail(err, errlen, "bad user name: too long or a bad %%-escape");
    if (colon && decode(out->password, sizeof out->password, colon + 1,
                        (size_t)(s + len - colon - 1)) < 0)
        return fail(err, errlen, "bad password: too long or a bad %%-escape");
    return 0;
}

/* ?db=N&password=P; s points past the '?'. */
static int parse_query(const char *s, struct rurl *out, char *err, size_t errlen)
{
    while (*s) {
        size_t len = strcspn(s, "&");
        const char *eq = memchr(s, '=', len);
        if (!eq)
            return fail(err, errlen, "bad query: expected name=value");
        size_t nlen = (size_t)(eq - s), vlen = len - nlen - 1;
        if (nlen == 2 && strncmp(s, "db", 2) == 0) {
            if (parse_num(eq + 1, vlen, 0, INT_MAX, &out->db) < 0)
                return fail(err, errlen, "bad database number");
        } else if (nlen == 8 && strncmp(s, "password", 8) == 0) {
            if (decode(out->password, sizeof out->password, eq + 1, vlen) < 0)
                return fail(err, errlen, "bad password: too long or a bad %%-escape");
        } else {
            return fail(err, errlen, "unsupported query parameter: only db and password");
        }
        s += len + (s[len] == '&');
    }
    return 0;
}

static int parse_tcp(const char *s, struct rurl *out, char *err, size_t errlen)
{
    size_t alen = strcspn(s, "/?");
    const char *auth = s, *at = NULL;

    for (const char *p = s; p < s + alen; p++)
        if (*p == '@')
            at = p;
    if (at) {
        if (parse_userinfo(s, (size_t)(at - s), out, err, errlen) < 0)
            return -1;
        auth = at + 1;
    }
    if (parse_hostport(auth, (size_t)(s + alen - auth), out, err, errlen) < 0)
        return -1;
    s += alen;
    if (*s == '/') {
        size_t dlen = strcspn(++s, "?");
        if (dlen > 0 && parse_num(s, dlen, 0, INT_MAX, &out->db) < 0)
            return fail(err, errlen, "bad database number");
        s += dlen;
    }
    return *s == '?' ? parse_query(s + 1, out, err, errlen) : 0;
}

static int parse_unix(const char *s, struct rurl *out, char *err, size_t errlen)
{
    const char *slash = strchr(s, '/');

    if (!slash)
        return fail(err, errlen, "unix:// needs an absolute socket path: unix:///path/to.sock");
    if (slash > s) {
        if (slash[-1] != '@')
            return fail(err, errlen, "unix:// needs an absolute socket path: unix:///path/to.sock");
        if (parse_userinfo(s, (size_t)(slash - 1 - s), out, err, errlen) < 0)
            return -1;
    }
    size_t plen = strcspn(slash, "?");
    if (plen >= sizeof out->path)
        return fail(err, errlen, "socket path too long (at most %zu bytes)", sizeof out->path - 1);
    memcpy(out->path, slash, plen);
    out->path[plen] = '\0';
    out->port = 0;
    return slash[plen] == '?' ? parse_query(slash + plen + 1, out, err, errlen) : 0;
}

static int is_true(const char *s, size_t len)
{
    return (len == 4 && strncasecmp(s, "true", 4) == 0) || (len == 1 && s[0] == '1');
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && isspace((unsigned char)**s))
        (*s)++, (*len)--;
    while (*len > 0 && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

/* One name=value option of the StackExchange form. */
static int parse_option(const char *s, size_t len, struct rurl *out, char *err, size_t errlen)
{
    const char *eq = memchr(s, '=', len);

    if (!eq)
        return fail(err, errlen, "several endpoints are not supported: give one host:port");
    const char *name = s, *val = eq + 1;
    size_t nlen = (size_t)(eq - s), vlen = (size_t)(s + len - val);
    trim(&name, &nlen);
    if (nlen == 8 && strncasecmp(name, "password", 8) == 0) {
        if (vlen >= sizeof out->password)
            return fail(err, errlen, "password too long");
        memcpy(out->password, val, vlen);
        out->password[vlen] = '\0';
    } else if (nlen == 4 && strncasecmp(name, "user", 4) == 0) {
        trim(&val, &vlen);
        if (vlen >= sizeof out->user)
            return fail(err, errlen, "user name too long");
        memcpy(out->user, val, vlen);
        out->user[vlen] = '\0';
    } else if (nlen == 15 && strncasecmp(name, "defaultDatabase", 15) == 0) {
        trim(&val, &vlen);
        if (parse_num(val, vlen, 0, INT_MAX, &out->db) < 0)
            return fail(err, errlen, "bad defaultDatabase number");
    } else if (nlen == 3 && strncasecmp(name, "ssl", 3) == 0) {
        trim(&val, &vlen);
        if (is_true(val, vlen))
            return fail(err, errlen, "ssl=true is not supported: this build has no TLS");
    }
    return 0;
}

static int parse_stackexchange(const char *s, struct rurl *out, char *err, size_t errlen)
{
    size_t len = strcspn(s, ",");
    const char *host = s;
    size_t hlen = len;

    trim(&host, &hlen);
    if (parse_hostport(host, hlen, out, err, errlen) < 0)
        return -1;
    for (s += len; *s == ','; s += len) {
        s++;
        len = strcspn(s, ",");
        if (parse_option(s, len, out, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int rurl_parse(const char *url, struct rurl *out, char *err, size_t errlen)
{
    int rc;

    memset(out, 0, sizeof *out);
    if (errlen > 0)
        err[0] = '\0';
    if (!url || !*url)
        return fail(err, errlen, "empty Redis URL");
    if (has_prefix(url, "rediss://"))
        rc = fail(err, errlen, "rediss:// (TLS) is not supported: this build's hiredis has no "
                               "TLS; reach a TLS Redis through a local tunnel and use redis://");
    else if (has_prefix(url, "redis://"))
        rc = parse_tcp(url + 8, out, err, errlen);
    else if (has_prefix(url, "unix://"))
        rc = parse_unix(url + 7, out, err, errlen);
    else if (strstr(url, "://"))
        rc = fail(err, errlen, "unsupported scheme: use redis://, unix:// or host:port,password=");
    else
        rc = parse_stackexchange(url, out, err, errlen);
    if (rc < 0)
        memset(out, 0, sizeof *out); /* no half-parsed password left behind */
    return rc;
}

/* Appends to a fixed buffer, truncating; the buffer is always NUL-terminated. */
struct outbuf {
    char *p;
    size_t size, len;
};

static void put(struct outbuf *o, const char *s, size_t n)
{
    size_t room = o->size - 1 - o->len;

    if (n > room)
        n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void put_str(struct outbuf *o, const char *s)
{
    put(o, s, strlen(s));
}

static int is_password_name(const char *s, size_t len)
{
    trim(&s, &len);
    return len == 8 && strncasecmp(s, "password", 8) == 0;
}

/*
 * name=value options separated by sep, with every password's value hidden. An
 * option without '=' right after a password is taken to be the rest of it (a
 * password holding the separator), so it is hidden too.
 */
static void redact_options(struct outbuf *o, const char *s, char sep)
{
    const char seps[2] = {sep, '\0'};
    int in_password = 0;

    for (int first = 1; first || *s == sep; first = 0) {
        if (!first)
            s++;
        size_t len = strcspn(s, seps);
        const char *eq = memchr(s, '=', len);
        if (!eq && in_password) {
            s += len;
            continue;
        }
        if (!first)
            put(o, &sep, 1);
        in_password = eq && is_password_name(s, (size_t)(eq - s));
        if (in_password) {
            put(o, s, (size_t)(eq - s + 1));
            put_str(o, "***");
        } else {
            put(o, s, len);
        }
        s += len;
    }
}

/*
 * scheme://userinfo@rest: everything between "://" and the last '@' is hidden except
 * a user name before the first ':'. The last '@' of the whole URL is used, not the
 * one in the authority, so that a password holding '/' or '?' is hidden too. A
 * userinfo without ':' is hidden whole: some clients read it as a password.
 */
static void redact_url(struct outbuf *o, const char *url, const char *rest)
{
    const char *at = strrchr(rest, '@'), *tail = rest;

    put(o, url, (size_t)(rest - url));
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon) {
            put(o, rest, (size_t)(colon - rest));
            put_str(o, ":***@");
        } else {
            put_str(o, "***@");
        }
        tail = at + 1;
    }
    size_t qlen = strcspn(tail, "?");
    put(o, tail, qlen);
    if (tail[qlen] == '?') {
        put_str(o, "?");
        redact_options(o, tail + qlen + 1, '&');
    }
}

void rurl_redact(const char *url, char *buf, size_t size)
{
    struct outbuf o = {buf, size, 0};

    if (size == 0)
        return;
    buf[0] = '\0';
    if (!url)
        return;
    const char *sep = strstr(url, "://");
    if (sep)
        redact_url(&o, url, sep + 3);
    else
        redact_options(&o, url, ',');
}
