/*
 * curlev.h - libcurl's multi interface on a libev loop, the way hiredis's
 * adapters/libev.h puts a redis context on one: nothing else knows about the loop.
 *
 * One struct curlev per worker process holds one curl multi handle. Callers add
 * configured easy handles; curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> one ev_io per socket) and when to wake it
 * (CURLMOPT_TIMERFUNCTION -> one ev_timer), and the loop drives every transfer
 * through curl_multi_socket_action(). Many transfers run at once; the multi keeps
 * finished connections in its cache, so the next transfer to the same host reuses
 * one (and its DNS cache and TLS session).
 *
 * Ownership: the caller owns each easy handle. curlev_add() lends it to the multi
 * until the done callback, which runs exactly once, from the loop (never inside
 * curlev_add()), after the handle was taken out of the multi: the callback may
 * curl_easy_cleanup() it. curlev_remove() takes a handle out early; its callback
 * never runs. curlev_free() removes whatever is still running, without callbacks.
 */
#ifndef STELLER_CURLEV_H
#define STELLER_CURLEV_H

#include <curl/curl.h>
#include <ev.h>

struct curlev;

/* rc: the transfer's result (CURLE_OK, CURLE_OPERATION_TIMEDOUT, ...). */
typedef void curlev_done_fn(void *ud, CURL *easy, CURLcode rc);

/* NULL when out of memory or when curl_global_init failed. */
struct curlev *curlev_new(struct ev_loop *loop);
/* Removes every transfer (no callbacks) and frees the multi. Safe from inside a
 * done callback: the free then happens when the callback returns. */
void curlev_free(struct curlev *cv);

/* Starts easy on the multi. Returns 0, or -1 (fn not called) when curl refuses. */
int curlev_add(struct curlev *cv, CURL *easy, curlev_done_fn *fn, void *ud);
/* Stops a transfer started by curlev_add(); its callback never runs. */
void curlev_remove(struct curlev *cv, CURL *easy);

/* The multi handle, for options such as CURLMOPT_MAXCONNECTS. */
CURLM *curlev_multi(struct curlev *cv);

#endif
