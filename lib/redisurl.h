/*
 * redisurl.h - parses REDIS_URL the way the API's .env writes it:
 *   redis://[[user]:password@]host[:port][/db]   (default port 6379, db 0)
 *   rediss:// is refused (no TLS in hiredis 0.14); unix:///path/to/sock[?db=N]
 * Also accepts StackExchange.Redis style "host:port,password=...".
 * Used by the daemon, stellerctl and libstellerjobs.
 */
#ifndef STELLER_REDISURL_H
#define STELLER_REDISURL_H

#include <stddef.h>

struct rurl {
    char host[256];
    int port;           /* 0 for a unix socket */
    char path[256];     /* unix socket path, "" for TCP */
    char user[128];
    char password[256]; /* secret: never log it */
    int db;
};

/* Returns 0, or -1 with a reason in err (which never contains the password). */
int rurl_parse(const char *url, struct rurl *out, char *err, size_t errlen);

/* The URL with any password replaced by "***", for logs and --check-config. */
void rurl_redact(const char *url, char *buf, size_t size);

#endif
