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
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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
/* Cancels what is in flight (no callbacks) and frees everything. Not from inside
 * a mail callback. */
void mail_free(struct mail *m);

/* "sendgrid", "smtp" or "log". */
const char *mail_transport(const struct mail *m);

/* "closed", "open" or "half-open", for the heartbeat and stellerctl stats. */
const char *mail_breaker_state(const struct mail *m);

/* Starts sending msg; returns a handle for mail_cancel(), or NULL when out of
 * memory (fn not called). */
struct mail_req *mail_send(struct mail *m, const struct mail_msg *msg, mail_done_fn *fn,
                           void *ud);

/* Stops a request (a job that timed out): its callback never runs. r must not be
 * used once its callback has started. */
void mail_cancel(struct mail_req *r);

/* ---- For tests (tests/unit/test_mail.c): the pure parts of mail.c. ----
 * No loop, no network, no clock of their own: time comes in as arguments. */

/* Splits email.from, "Name <addr>" or "addr", into name ("" when none) and addr.
 * Returns 0, or -1 when there is no address or a buffer is too small. */
int mail_parse_from(const char *from, char *name, size_t namelen, char *addr, size_t addrlen);

/* A Retry-After value, delta-seconds or an HTTP date, as ms after now_ms (a date
 * in the past gives 0; capped at one day). -1 when it is neither. */
int64_t mail_retry_after_ms(const char *value, int64_t now_ms);

/* The SendGrid v3 mail/send body (compact JSON; a name is left out when empty).
 * malloc'd; NULL when a string is not UTF-8 or out of memory. */
char *mail_sendgrid_json(const struct mail_msg *msg, const char *from_name,
                         const char *from_addr);

/* A header value as it goes on the wire: as is when it is printable ASCII,
 * else RFC 2047 encoded words (UTF-8, base64), folded. malloc'd or NULL. */
char *mail_header_text(const char *s);

/* The whole RFC 5322 message for SMTP, CRLF line endings: Date (from date, UTC),
 * From, To, Subject, Message-ID (message_id without <>), MIME-Version, and a
 * multipart/alternative body (text and html, quoted-printable) separated by
 * boundary; a single part when html or text is NULL or empty. Dot-stuffing is
 * left to curl. malloc'd; NULL when out of memory. */
char *mail_mime(const struct mail_msg *msg, const char *from_name, const char *from_addr,
                time_t date, const char *message_id, const char *boundary);

/* The circuit breaker of one transport. closed: requests go, transient failures
 * are counted; `threshold` in a row open it. open: nothing goes until
 * cooloff (plus up to 20% jitter) has passed. half-open: exactly one request, the
 * probe, goes; its success (or a permanent answer: the provider is up) closes the
 * breaker, its transient failure opens it again. A success or a permanent
 * failure while closed resets the count. Outcomes of requests that were already
 * in flight when it opened are ignored. */
enum mail_brk { MAIL_BRK_CLOSED = 0, MAIL_BRK_OPEN = 1, MAIL_BRK_HALF_OPEN = 2 };

/* How long requests wait while the probe is out. */
#define MAIL_PROBE_WAIT_MS 2000

struct mail_breaker {
    int threshold;
    int64_t cooloff_ms;
    enum mail_brk state;
    int failures;     /* closed: transient failures in a row */
    int64_t until_ms; /* open: when the probe may go */
    int probing;      /* half-open: the probe is out */
};

void mail_breaker_init(struct mail_breaker *b, int threshold, int64_t cooloff_ms);
/* Moves open -> half-open once the cooloff is over. */
void mail_breaker_tick(struct mail_breaker *b, int64_t now_ms);
/* 0 when a request may go now, else the ms it should wait; changes nothing. */
int64_t mail_breaker_wait(const struct mail_breaker *b, int64_t now_ms);
/* Lets one request go: returns 0 and sets *probe (1: it is the half-open probe),
 * or returns the ms to wait (> 0). */
int64_t mail_breaker_admit(struct mail_breaker *b, int64_t now_ms, int *probe);
/* The outcome of an admitted request; u in [0, 1) picks the jitter. */
void mail_breaker_record(struct mail_breaker *b, int64_t now_ms, enum mail_result r, int probe,
                         double u);
/* An admitted request that ended without an answer (cancelled, not started):
 * when it was the probe, the next request probes instead. */
void mail_breaker_release(struct mail_breaker *b, int probe);
const char *mail_breaker_name(enum mail_brk s);

/* The rate limit: a token bucket of rate tokens a second holding up to
 * max(1, rate / 10) (a tenth of a second's worth). rate 0: no limit. */
struct mail_bucket {
    double rate, burst, tokens;
    int64_t last_ms;
};

void mail_bucket_init(struct mail_bucket *b, double rate, int64_t now_ms);
/* Takes a token: 0, or the ms until one is there (nothing taken). */
int64_t mail_bucket_take(struct mail_bucket *b, int64_t now_ms);

#endif
