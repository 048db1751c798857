/*
 * http.h - a small HTTP/1.1 server on the master's libev loop, for /metrics,
 * /healthz and /stats.json (SPEC §1, §8).
 *
 * One request per connection, GET only, `Connection: close` always. A request
 * head larger than HTTP_HEAD_MAX is answered 431, a malformed one 400, another
 * method 405, an unknown path 404. Each connection has a deadline
 * (HTTP_DEADLINE seconds to send its head), so a slow or silent client costs
 * one slot for a bounded time; at most HTTP_MAX_CONNS connections are open,
 * and one beyond that is accepted and closed at once.
 *
 * Routes are a table of {path, handler, ud}. A handler gets a struct http_resp
 * and must complete it exactly once with http_reply(), then or later (after
 * Redis answers, for instance). Ownership: the server owns the response object;
 * it stays valid until http_reply(), even if the client went away or the
 * server was freed meanwhile (the reply is then dropped).
 */
#ifndef STELLER_HTTP_H
#define STELLER_HTTP_H

#include <ev.h>
#include <stddef.h>

#define HTTP_HEAD_MAX 8192
#define HTTP_DEADLINE 5.0
#define HTTP_MAX_CONNS 256

struct http_server;
struct http_resp;

typedef void http_handler_fn(struct http_resp *resp, void *ud);

struct http_route {
    const char *path; /* exact match, query string ignored */
    http_handler_fn *fn;
    void *ud;
};

/*
 * Listens on "HOST:PORT" (IPv4 address, "localhost", or "*" / "0.0.0.0" / ""
 * for every address; port 0 picks a free one). routes (nroutes entries) must
 * outlive the server. Returns NULL with a reason in err when it cannot listen.
 */
struct http_server *http_new(struct ev_loop *loop, const char *listen,
                             const struct http_route *routes, int nroutes, char *err,
                             size_t errlen);

/* The port actually bound (useful with port 0). */
int http_port(const struct http_server *srv);

/* Stops listening, closes every connection and frees the server. Responses a
 * handler still holds stay valid until their http_reply(). NULL is fine. */
void http_free(struct http_server *srv);

/* In a forked child that will never run the parent's loop: closes the
 * listening socket and the connections' sockets, touching no watcher. */
void http_close_fds(struct http_server *srv);

/*
 * Completes a response: status, Content-Type, and a body of len bytes (copied).
 * Must be called exactly once per response; resp is invalid afterwards.
 */
void http_reply(struct http_resp *resp, int status, const char *ctype, const char *body,
                size_t len);

#endif
