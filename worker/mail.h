/*
 * mail.h - sending one email through the configured transport (SPEC §5):
 * sendgrid (v3 mail/send over HTTPS), smtp (STARTTLS, AUTH) or log.
 *
 * One struct mail per worker process, on the worker's libev loop. HTTP and SMTP
 * requests run on one libcurl multi handle driven by the loop (worker/curlev.h),
 * many in flight at once, connections reused. The transport has a circuit breaker
 * (email.breaker_failures transient failures in a row open it for
 * email.breaker_cooloff seconds plus jitter; then one probe closes it or opens it
 * again) and a rate limit (email.rate_per_second, this process's share).
 *
 * Ownership: mail_send() copies the message; the callback runs exactly once, from
 * the loop (never inside mail_send()), unless the request was cancelled first.
 * The strings in the outcome are valid only during the callback. Nothing here logs
 * or returns the API key or the SMTP password.
 */
#ifndef STELLER_MAIL_H
#define STELLER_MAIL_H

#include <ev.h>
#include <stdint.h>

#include "config.h"

struct mail_msg {
    const char *to;      /* bare address, checked by the caller */
    const char *to_name; /* display name, or NULL */
    const char *subject; /* no CR or LF: the caller refuses those */
    const char *text;    /* plain-text part */
    const char *html;    /* HTML part */
};

enum mail_result {
    MAIL_SENT = 0,      /* accepted by the provider (sendgrid 2xx, SMTP 250) or logged */
    MAIL_PERMANENT = 1, /* refused for good (4xx other than 429, SMTP 5xx): do not retry */
    MAIL_TRANSIENT = 2, /* 5xx, 429, timeout, connection error: retry later */
    MAIL_WAIT = 3,      /* not attempted: breaker open or over the rate; retry after
                           delay_ms without spending an attempt */
};

struct mail_outcome {
    enum mail_result result;
    int64_t delay_ms;        /* MAIL_WAIT, or MAIL_TRANSIENT with a Retry-After; else 0 */
    const char *provider_id; /* sendgrid's X-Message-Id, SMTP's queue id if any, or NULL */
    const char *error;       /* why, for the job's error and the log; NULL when sent */
};

typedef void mail_done_fn(void *ud, const struct mail_outcome *o);

struct mail;
struct mail_req;

/* The transport chosen by c->email_transport; NULL with the reason in err. */
struct mail *mail_new(struct ev_loop *loop, const struct config *c, char *err, size_t errlen);
/* Cancels what is in flight (no callbacks) and frees everything. */
void mail_free(struct mail *m);

/* "sendgrid", "smtp" or "log". */
const char *mail_transport(const struct mail *m);

/* "closed", "open" or "half-open", for the heartbeat and stellerctl stats. */
const char *mail_breaker_state(const struct mail *m);

/* Starts sending msg; returns a handle for mail_cancel(), or NULL when out of
 * memory (fn not called). */
struct mail_req *mail_send(struct mail *m, const struct mail_msg *msg, mail_done_fn *fn,
                           void *ud);

/* Stops a request (a job that timed out): its callback never runs. */
void mail_cancel(struct mail_req *r);

#endif
