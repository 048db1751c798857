/*
 * http.c - the master's HTTP server: one request per connection, on libev.
 *
 * A connection goes READ (collect the head, at most HTTP_HEAD_MAX bytes) ->
 * HANDLER (a route's handler holds the response; the socket is not watched)
 * -> WRITE (the answer, resumed on EAGAIN) -> LINGER (our side shut down; what
 * the client still sends is read and dropped until it closes, so that closing
 * with unread bytes does not reset the connection before it read our answer).
 * One timer per connection bounds each state: HTTP_DEADLINE to send the head
 * (slowloris), HTTP_DEADLINE to take the answer, LINGER_SECS to hang up.
 *
 * A handler may answer after its connection is gone (the deadline passed, or
 * the server was freed on shutdown): the connection is then an orphan, off the
 * server's list with its socket closed, and http_reply() only frees it.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define ACCEPTS_PER_TICK 64
#define HANDLER_SECS 30.0 /* a handler that never answers; metrics answers within 2 s */
#define LINGER_SECS 2.0
#define TARGET_MAX 2048

enum conn_state { C_READ, C_HANDLER, C_WRITE, C_LINGER };

/* The response object handlers see is the connection itself. */
struct http_resp {
    struct http_server *srv; /* NULL once orphaned */
    int fd;                  /* -1 once closed */
    enum conn_state state;
    ev_io io;
    ev_timer timer;
    char *out;
    size_t out_len, out_off;
    size_t len;
    char path[TARGET_MAX + 1];
    char head[HTTP_HEAD_MAX];
    struct http_resp *prev, *next;
};

struct http_server {
    struct ev_loop *loop;
    int fd;
    int port;
    const struct http_route *routes;
    int nroutes;
    ev_io accept_io;
    ev_timer accept_pause; /* out of descriptors: accept again a little later */
    struct http_resp *conns;
    int nconns;
};

static const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* ---- connection lifetime ---- */

static void conn_unlink(struct http_resp *c)
{
    struct http_server *srv = c->srv;
    if (!srv)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
}

/* Stops the watchers and closes the socket; the struct stays. */
static void conn_detach(struct http_resp *c)
{
    if (c->srv) {
        ev_io_stop(c->srv->loop, &c->io);
        ev_timer_stop(c->srv->loop, &c->timer);
        conn_unlink(c);
        c->srv = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_free(struct http_resp *c)
{
    conn_detach(c);
    free(c->out);
    free(c);
}

/* Closes now, unless a handler holds the response: then it becomes an orphan
 * that http_reply() frees. */
static void conn_drop(struct http_resp *c)
{
    if (c->state == C_HANDLER)
        conn_detach(c);
    else
        conn_free(c);
}

static void conn_arm(struct http_resp *c, double secs)
{
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_timer_set(&c->timer, secs, 0);
    ev_timer_start(c->srv->loop, &c->timer);
}

static void conn_watch(struct http_resp *c, int events)
{
    ev_io_stop(c->srv->loop, &c->io);
    if (!events)
        return;
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->srv->loop, &c->io);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_drop(t->data);
}

/* ---- writing and lingering ---- */

static void conn_linger(struct http_resp *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = C_LINGER;
    conn_watch(c, EV_READ);
    conn_arm(c, LINGER_SECS);
}

static void conn_on_linger(struct http_resp *c)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(c->fd, buf, sizeof(buf))) > 0)
        ;
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
        conn_free(c);
}

static void conn_flush(struct http_resp *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            conn_watch(c, EV_WRITE);
            return;
        }
        conn_free(c); /* the client went away */
        return;
    }
    conn_linger(c);
}

static int conn_format(struct http_resp *c, int status, const char *ctype, const char *body,
                       size_t len)
{
    char head[256];
    int n =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "%sCache-Control: no-store\r\nConnection: close\r\n\r\n",
                 status, http_reason(status), ctype, len, status == 405 ? "Allow: GET\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return -1;
    c->out = malloc((size_t)n + len);
    if (!c->out)
        return -1;
    memcpy(c->out, head, (size_t)n);
    if (len)
        memcpy(c->out + n, body, len);
    c->out_len = (size_t)n + len;
    c->out_off = 0;
    return 0;
}

void http_reply(struct http_resp *c, int status, const char *ctype, const char *body, size_t len)
{
    if (!c->srv || c->fd < 0 || conn_format(c, status, ctype, body, len) != 0) {
        conn_free(c);
        return;
    }
    c->state = C_WRITE;
    conn_arm(c, HTTP_DEADLINE);
    conn_flush(c);
}

static void conn_error(struct http_resp *c, int status, const char *msg)
{
    http_reply(c, status, "text/plain; charset=utf-8", msg, strlen(msg));
}

/* ---- parsing ---- */

static int is_tchar(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The end of the head ("\r\n\r\n" or "\n\n"), or NULL. */
static const char *head_end(const char *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n')
            return p + i + 2;
        if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
            return p + i + 3;
    }
    return NULL;
}

/* Every header line is "name: value" with a token name. */
static int headers_ok(const char *p, const char *end)
{
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *q = p;
        size_t n;
        if (!eol)
            return 0;
        n = (size_t)(eol - p) - (eol > p && eol[-1] == '\r');
        if (n == 0)
            return 1; /* the blank line that ends the head */
        while (q < p + n && is_tchar((unsigned char)*q))
            q++;
        if (q == p || q == p + n || *q != ':')
            return 0;
        p = eol + 1;
    }
    return 0;
}

/* Parses the request line into method and path (query string dropped).
 * Returns 0, or the status to answer: 400 or 405. */
static int conn_parse(struct http_resp *c, const char *end)
{
    const char *p = c->head, *sp1, *sp2, *eol, *q;
    size_t mlen, tlen;

    while (p < end && (*p == '\r' || *p == '\n')) /* RFC 9112 2.2: ignore leading CRLFs */
        p++;
    if (memchr(c->head, '\0', (size_t)(end - c->head)))
        return 400;
    eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        return 400;
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2)
        return 400;
    mlen = (size_t)(sp1 - p);
    tlen = (size_t)(sp2 - sp1 - 1);
    for (q = p; q < sp1 && is_tchar((unsigned char)*q); q++)
        ;
    if (mlen == 0 || q != sp1 || tlen == 0 || tlen > TARGET_MAX || sp1[1] != '/')
        return 400;
    for (q = sp1 + 1; q < sp2; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            return 400;
    q = sp2 + 1;
    if ((size_t)(eol - q) - (eol[-1] == '\r') != 8 || strncmp(q, "HTTP/1.", 7) != 0 ||
        (q[7] != '0' && q[7] != '1'))
        return 400;
    if (!headers_ok(eol + 1, end))
        return 400;
    q = memchr(sp1 + 1, '?', tlen);
    tlen = q ? (size_t)(q - sp1 - 1) : tlen;
    memcpy(c->path, sp1 + 1, tlen);
    c->path[tlen] = '\0';
    if (mlen != 3 || memcmp(p, "GET", 3) != 0)
        return 405;
    return 0;
}

static void conn_dispatch(struct http_resp *c, const char *end)
{
    struct http_server *srv = c->srv;
    int status = conn_parse(c, end);

    conn_watch(c, 0);
    if (status == 400) {
        conn_error(c, 400, "malformed request\n");
        return;
    }
    if (status == 405) {
        conn_error(c, 405, "only GET is supported\n");
        return;
    }
    for (int i = 0; i < srv->nroutes; i++) {
        if (strcmp(srv->routes[i].path, c->path) == 0) {
            c->state = C_HANDLER;
            conn_arm(c, HANDLER_SECS);
            srv->routes[i].fn(c, srv->routes[i].ud);
            return;
        }
    }
    conn_error(c, 404, "not found\n");
}

static void conn_on_read(struct http_resp *c)
{
    for (;;) {
        size_t before = c->len;
        ssize_t n;
        const char *end;
        if (c->len == sizeof(c->head)) {
            conn_error(c, 431, "request head too large\n");
            return;
        }
        n = read(c->fd, c->head + c->len, sizeof(c->head) - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_free(c);
            return;
        }
        c->len += (size_t)n;
        before = before > 3 ? before - 3 : 0; /* the end may straddle two reads */
        end = head_end(c->head + before, c->len - before);
        if (end) {
            conn_dispatch(c, end);
            return;
        }
    }
}

static void conn_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct http_resp *c = io->data;
    (void)loop;
    (void)revents;
    switch (c->state) {
    case C_READ: conn_on_read(c); break;
    case C_WRITE: conn_flush(c); break;
    case C_LINGER: conn_on_linger(c); break;
    case C_HANDLER: conn_watch(c, 0); break;
    }
}

/* ---- listening ---- */

static void http_add_conn(struct http_server *srv, int fd)
{
    struct http_resp *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->state = C_READ;
    ev_io_init(&c->io, conn_on_io, fd, EV_READ);
    c->io.data = c;
    ev_timer_init(&c->timer, conn_on_timer, HTTP_DEADLINE, 0);
    c->timer.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    ev_io_start(srv->loop, &c->io);
    ev_timer_start(srv->loop, &c->timer);
}

static void http_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct http_server *srv = io->data;
    (void)revents;
    for (int i = 0; i < ACCEPTS_PER_TICK; i++) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                LOG(LOG_WARN, "http: cannot accept; pausing", "errno=%d", errno);
                ev_io_stop(loop, &srv->accept_io);
                ev_timer_set(&srv->accept_pause, 0.1, 0);
                ev_timer_start(loop, &srv->accept_pause);
            }
            return; /* EAGAIN, or a connection that died in the backlog */
        }
        if (srv->nconns >= HTTP_MAX_CONNS) {
            close(fd);
            continue;
        }
        http_add_conn(srv, fd);
    }
}

static void http_on_accept_pause(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct http_server *srv = t->data;
    (void)revents;
    ev_io_start(loop, &srv->accept_io);
}

static int http_parse_listen(const char *listen, struct sockaddr_in *sa, char *err, size_t errlen)
{
    const char *colon = strrchr(listen, ':');
    char host[64];
    size_t hlen;
    long port;
    char *end;

    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    if (!colon || (hlen = (size_t)(colon - listen)) >= sizeof(host)) {
        snprintf(err, errlen, "http.listen '%s' is not HOST:PORT", listen);
        return -1;
    }
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) {
        snprintf(err, errlen, "http.listen '%s': bad port", listen);
        return -1;
    }
    sa->sin_port = htons((unsigned short)port);
    if (!host[0] || strcmp(host, "*") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        snprintf(err, errlen, "http.listen '%s': host must be an IPv4 address", listen);
        return -1;
    }
    return 0;
}

static int http_bind(const char *addr, int *port, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    int one = 1, fd;

    if (http_parse_listen(addr, &sa, err, errlen) != 0)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

struct http_server *http_new(struct ev_loop *loop, const char *listen,
                             const struct http_route *routes, int nroutes, char *err, size_t errlen)
{
    struct http_server *srv;
    int port, fd = http_bind(listen, &port, err, errlen);

    if (fd < 0)
        return NULL;
    srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    srv->loop = loop;
    srv->fd = fd;
    srv->port = port;
    srv->routes = routes;
    srv->nroutes = nroutes;
    ev_io_init(&srv->accept_io, http_on_accept, fd, EV_READ);
    srv->accept_io.data = srv;
    ev_timer_init(&srv->accept_pause, http_on_accept_pause, 0, 0);
    srv->accept_pause.data = srv;
    ev_io_start(loop, &srv->accept_io);
    return srv;
}

int http_port(const struct http_server *srv)
{
    return srv->port;
}

void http_free(struct http_server *srv)
{
    if (!srv)
        return;
    while (srv->conns)
        conn_drop(srv->conns);
    ev_io_stop(srv->loop, &srv->accept_io);
    ev_timer_stop(srv->loop, &srv->accept_pause);
    close(srv->fd);
    free(srv);
}

void http_close_fds(struct http_server *srv)
{
    if (!srv)
        return;
    for (struct http_resp *c = srv->conns; c; c = c->next)
        if (c->fd >= 0)
            close(c->fd);
    close(srv->fd);
}
