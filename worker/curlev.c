/*
 * curlev.c - libcurl multi (socket API) driven by libev.
 *
 * curl calls sock_cb to say which events it wants on a socket: we keep one ev_io
 * per socket, attached to it with curl_multi_assign(), and drop it on
 * CURL_POLL_REMOVE (curl says so before it closes the socket). curl calls
 * timer_cb with the time to its next deadline: one ev_timer. Every wake-up
 * ends in curl_multi_socket_action() and then a sweep of curl_multi_info_read()
 * for finished transfers.
 *
 * Callbacks never run from inside a curl call: curl forbids removing handles
 * from its own callbacks, so finished transfers are collected first and reported
 * after curl_multi_socket_action() has returned. A timer of 0 ms from curl is
 * honoured on the next loop iteration, not by calling back into curl from
 * timer_cb, which curl also forbids.
 */
#include "curlev.h"

#include <stdlib.h>

struct curlev_sock {
    ev_io io;
    struct curlev *cv;
    struct curlev_sock *prev, *next;
};

/* One per easy handle on the multi, found through CURLOPT_PRIVATE. */
struct curlev_xfer {
    CURL *easy;
    curlev_done_fn *fn;
    void *ud;
    struct curlev_xfer *prev, *next;
};

struct curlev {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    struct curlev_xfer *xfers; /* every transfer on the multi */
    struct curlev_sock *socks; /* every watched socket */
    int dispatching; /* in check_done: curlev_free() waits for it */
    int dying;
};

static void curlev_destroy(struct curlev *cv);

static void xfer_unlink(struct curlev *cv, struct curlev_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        cv->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
}

/* Reports finished transfers, one at a time, each after taking it off the multi. */
static void check_done(struct curlev *cv)
{
    CURLMsg *msg;
    int left;

    cv->dispatching++;
    while (!cv->dying && (msg = curl_multi_info_read(cv->multi, &left))) {
        struct curlev_xfer *x = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(cv->multi, easy);
        if (!x)
            continue;
        xfer_unlink(cv, x);
        x->fn(x->ud, easy, rc);
        free(x);
    }
    cv->dispatching--;
    if (cv->dying && !cv->dispatching)
        curlev_destroy(cv);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct curlev_sock *s = w->data;
    struct curlev *cv = s->cv;
    int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
                 (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int still;
    (void)loop;
    /* s may be freed inside this call (CURL_POLL_REMOVE): only cv from here on */
    curl_multi_socket_action(cv->multi, w->fd, action, &still);
    check_done(cv);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct curlev *cv = t->data;
    int still;
    (void)loop;
    (void)revents;
    curl_multi_socket_action(cv->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    check_done(cv);
}

static void sock_drop(struct curlev *cv, struct curlev_sock *s)
{
    ev_io_stop(cv->loop, &s->io);
    if (s->prev)
        s->prev->next = s->next;
    else
        cv->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct curlev *cv = userp;
    struct curlev_sock *s = socketp;
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_drop(cv, s);
            curl_multi_assign(cv->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return -1; /* curl fails the transfers on this socket */
        s->cv = cv;
        ev_init(&s->io, on_io);
        s->io.data = s;
        s->next = cv->socks;
        if (cv->socks)
            cv->socks->prev = s;
        cv->socks = s;
        curl_multi_assign(cv->multi, fd, s);
    }
    ev_io_stop(cv->loop, &s->io);
    ev_io_set(&s->io, fd, events);
    if (events)
        ev_io_start(cv->loop, &s->io);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct curlev *cv = userp;
    (void)multi;
    ev_timer_stop(cv->loop, &cv->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&cv->timer, timeout_ms / 1000.0, 0);
        ev_timer_start(cv->loop, &cv->timer);
    }
    return 0;
}

struct curlev *curlev_new(struct ev_loop *loop)
{
    struct curlev *cv;

    /* reference-counted by libcurl: paired with curl_global_cleanup() in destroy */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    if (!(cv = calloc(1, sizeof(*cv))) || !(cv->multi = curl_multi_init())) {
        free(cv);
        curl_global_cleanup();
        return NULL;
    }
    cv->loop = loop;
    ev_init(&cv->timer, on_timer);
    cv->timer.data = cv;
    curl_multi_setopt(cv->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(cv->multi, CURLMOPT_SOCKETDATA, cv);
    curl_multi_setopt(cv->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cv->multi, CURLMOPT_TIMERDATA, cv);
    return cv;
}

static void curlev_destroy(struct curlev *cv)
{
    struct curlev_xfer *x = cv->xfers, *next;
    for (; x; x = next) {
        next = x->next;
        curl_multi_remove_handle(cv->multi, x->easy);
        free(x);
    }
    curl_multi_cleanup(cv->multi);
    /* curl may close its cached connections without telling sock_cb */
    while (cv->socks)
        sock_drop(cv, cv->socks);
    ev_timer_stop(cv->loop, &cv->timer);
    free(cv);
    curl_global_cleanup();
}

void curlev_free(struct curlev *cv)
{
    if (!cv)
        return;
    cv->dying = 1;
    if (!cv->dispatching)
        curlev_destroy(cv);
}

int curlev_add(struct curlev *cv, CURL *easy, curlev_done_fn *fn, void *ud)
{
    struct curlev_xfer *x;

    if (cv->dying || !(x = calloc(1, sizeof(*x))))
        return -1;
    x->easy = easy;
    x->fn = fn;
    x->ud = ud;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    /* Also arms a 0 ms timer: the transfer starts from the loop, not from here. */
    if (curl_multi_add_handle(cv->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(x);
        return -1;
    }
    x->next = cv->xfers;
    if (cv->xfers)
        cv->xfers->prev = x;
    cv->xfers = x;
    return 0;
}

void curlev_remove(struct curlev *cv, CURL *easy)
{
    struct curlev_xfer *x = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (!x)
        return;
    curl_multi_remove_handle(cv->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    xfer_unlink(cv, x);
    free(x);
}

CURLM *curlev_multi(struct curlev *cv)
{
    return cv->multi;
}
