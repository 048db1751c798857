/*
 * mail.c - one email through sendgrid, smtp or the log (SPEC §5).
 *
 * A request goes through three gates, in this order:
 *   1. the circuit breaker, checked at mail_send(): while it is open the request
 *      ends at once as MAIL_WAIT, so a job does not queue behind a dead provider;
 *   2. the rate limit: a token bucket; a request without a token waits in a FIFO
 *      drained by one ev_timer (FIFO: a new request never overtakes a waiting one);
 *   3. the breaker again when the request leaves the FIFO (it may have opened
 *      meanwhile; in half-open, this is where the one probe is chosen).
 * Then it becomes one curl easy handle on the process's multi (worker/curlev.c),
 * and its answer is classified here, once: sent, permanent, transient (with a
 * Retry-After) - and fed to the breaker before the caller hears of it, so that a
 * mail_send() from the callback already sees the new state.
 *
 * Outcomes that need no transfer (MAIL_WAIT, a refused message, the log
 * transport) are delivered from a 0 s ev_timer of the request: the callback never
 * runs inside mail_send().
 *
 * Secrets: the API key lives only in the Authorization header list, the SMTP
 * password only in CURLOPT_PASSWORD; verbose mode is never turned on, and every
 * error string (curl's error buffer, a provider's answer) is scrubbed of both
 * before it leaves this file.
 *
 * email.smtp.ca_file: CURLOPT_CAINFO would replace the system's CA bundle, so the
 * file's certificates are read once at mail_new() and added to the store curl
 * built from the system bundle, in CURLOPT_SSL_CTX_FUNCTION (OpenSSL only; with
 * another TLS backend mail_new() refuses a ca_file rather than ignore it).
 *
 * The functions under "pure parts" touch no loop and no clock: the unit tests
 * drive them directly (mail.h, "for tests").
 */
#include "mail.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "curlev.h"
#include "log.h"
#include "sbuf.h"

#define MAIL_RESP_MAX 2048     /* bytes of a provider's answer kept for the error */
#define MAIL_SNIPPET_MAX 200   /* bytes of it that go into the error */
#define MAIL_DAY_MS 86400000LL /* the longest Retry-After honoured */
#define MAIL_MAX_CONNECTS 64   /* idle connections the multi keeps for reuse */

/* ================================================================ pure parts */

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s))
        (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

static int copy_span(char *dst, size_t size, const char *s, size_t n)
{
    if (n >= size)
        return -1;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

int mail_parse_from(const char *from, char *name, size_t namelen, char *addr, size_t addrlen)
{
    const char *lt = strrchr(from, '<'), *gt;
    const char *a = from, *nm = from;
    size_t an = strlen(from), nn = 0;

    if (lt && (gt = strchr(lt, '>'))) {
        a = lt + 1;
        an = (size_t)(gt - a);
        nn = (size_t)(lt - from);
    }
    trim(&a, &an);
    trim(&nm, &nn);
    /* "Name" <addr>: the quotes are syntax, not part of the name */
    if (nn >= 2 && nm[0] == '"' && nm[nn - 1] == '"')
        nm++, nn -= 2;
    if (!an || !memchr(a, '@', an) || copy_span(addr, addrlen, a, an) < 0)
        return -1;
    return copy_span(name, namelen, nm, nn);
}

int64_t mail_retry_after_ms(const char *value, int64_t now_ms)
{
    const char *s = value;
    size_t n = value ? strlen(value) : 0;
    char buf[128];
    int64_t ms;

    trim(&s, &n);
    if (!n || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (strspn(buf, "0123456789") == n) {
        errno = 0;
        unsigned long long secs = strtoull(buf, NULL, 10);
        if (errno || secs > MAIL_DAY_MS / 1000)
            return MAIL_DAY_MS;
        return (int64_t)secs * 1000;
    }
    /* curl_getdate() reads the three HTTP date forms and needs no locale */
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1 || !isalpha((unsigned char)buf[0]))
        return -1;
    ms = (int64_t)t * 1000 - now_ms;
    return ms < 0 ? 0 : ms > MAIL_DAY_MS ? MAIL_DAY_MS : ms;
}

static int json_put(json_t *obj, const char *key, const char *value)
{
    json_t *v = json_string(value ? value : ""); /* NULL: not UTF-8 */
    return v ? json_object_set_new(obj, key, v) : -1;
}

/* {"email": addr, "name": name}, the name left out when empty. */
static json_t *json_addr(const char *addr, const char *name)
{
    json_t *o = json_object();
    if (!o || json_put(o, "email", addr) < 0 || (name && *name && json_put(o, "name", name) < 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *json_part(const char *type, const char *value)
{
    json_t *o = json_object();
    if (!o || json_put(o, "type", type) < 0 || json_put(o, "value", value) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *mail_sendgrid_json(const struct mail_msg *msg, const char *from_name, const char *from_addr)
{
    json_t *root = json_object(), *pers = json_object(), *tos = json_array();
    json_t *perss = json_array(), *content = json_array();
    char *out = NULL;
    int bad = !root || !pers || !tos || !perss || !content;

    bad = bad || json_array_append_new(tos, json_addr(msg->to, msg->to_name)) < 0;
    bad = bad || json_object_set(pers, "to", tos) < 0 || json_array_append(perss, pers) < 0;
    bad = bad || json_object_set(root, "personalizations", perss) < 0;
    bad = bad || json_object_set_new(root, "from", json_addr(from_addr, from_name)) < 0;
    bad = bad || json_put(root, "subject", msg->subject) < 0;
    /* SendGrid wants text/plain before text/html */
    if (!bad && msg->text && *msg->text)
        bad = json_array_append_new(content, json_part("text/plain", msg->text)) < 0;
    if (!bad && msg->html && *msg->html)
        bad = json_array_append_new(content, json_part("text/html", msg->html)) < 0;
    bad = bad || json_object_set(root, "content", content) < 0;
    if (!bad)
        out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    json_decref(pers);
    json_decref(tos);
    json_decref(perss);
    json_decref(content);
    return out;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void sb_base64(struct sbuf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = s[i] << 16 | (i + 1 < n ? s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {b64[v >> 18 & 63], b64[v >> 12 & 63], i + 1 < n ? b64[v >> 6 & 63] : '=',
                     i + 2 < n ? b64[v & 63] : '='};
        sb_addn(b, q, 4);
    }
}

/* Text that cannot go into a header as it is: not printable ASCII, something
 * that would read as an encoded word, or too long for one line. */
static int header_needs_encoding(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return 1;
    return strstr(s, "=?") != NULL || strlen(s) > 900;
}

/* Encoded words of at most 75 characters (45 bytes of text each), never cutting
 * a UTF-8 character in two, folded onto continuation lines. */
static void sb_rfc2047(struct sbuf *b, const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t take = n - i > 45 ? 45 : n - i;
        while (take > 1 && i + take < n && ((unsigned char)s[i + take] & 0xc0) == 0x80)
            take--;
        if (i)
            sb_add(b, "\r\n ");
        sb_add(b, "=?UTF-8?B?");
        sb_base64(b, (const unsigned char *)s + i, take);
        sb_add(b, "?=");
        i += take;
    }
}

char *mail_header_text(const char *s)
{
    struct sbuf b = {0};
    if (header_needs_encoding(s))
        sb_rfc2047(&b, s);
    else
        sb_add(&b, s);
    return sb_take(&b);
}

/* A display name as an RFC 5322 phrase: bare atoms, a quoted string, or encoded. */
static void sb_phrase(struct sbuf *b, const char *name)
{
    if (header_needs_encoding(name)) {
        sb_rfc2047(b, name);
        return;
    }
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "!#$%&'*+-/=?^_`{|}~ ") == strlen(name)) {
        sb_add(b, name);
        return;
    }
    sb_add(b, "\"");
    for (const char *p = name; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_add(b, "\\");
        sb_addn(b, p, 1);
    }
    sb_add(b, "\"");
}

static void sb_mailbox(struct sbuf *b, const char *field, const char *name, const char *addr)
{
    sb_add(b, field);
    if (name && *name) {
        sb_phrase(b, name);
        sb_addf(b, " <%s>\r\n", addr);
    } else {
        sb_addf(b, "%s\r\n", addr);
    }
}

static void sb_date(struct sbuf *b, time_t date)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&date, &tm);
    sb_addf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
            months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Quoted-printable (RFC 2045 6.7): lines of at most 76 characters, every line
 * break of the text a CRLF, whitespace before a break encoded so that no relay
 * strips it. */
static void sb_qp(struct sbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char enc[3];
        size_t n = 1;
        int at_break = !p[1] || p[1] == '\n' || (p[1] == '\r' && p[2] == '\n');
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\n') {
            sb_add(b, "\r\n");
            col = 0;
            continue;
        }
        enc[0] = (char)*p;
        if (*p == '=' || *p >= 0x7f || (*p < 0x20 && *p != '\t') ||
            ((*p == ' ' || *p == '\t') && at_break)) {
            enc[0] = '=';
            enc[1] = hex[*p >> 4];
            enc[2] = hex[*p & 15];
            n = 3;
        }
        if (col + n > 75) {
            sb_add(b, "=\r\n");
            col = 0;
        }
        sb_addn(b, enc, n);
        col += n;
    }
    sb_add(b, "\r\n");
}

static void sb_part_headers(struct sbuf *b, const char *type)
{
    sb_addf(b, "Content-Type: %s; charset=UTF-8\r\n", type);
    sb_add(b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
}

char *mail_mime(const struct mail_msg *msg, const char *from_name, const char *from_addr,
                time_t date, const char *message_id, const char *boundary)
{
    struct sbuf b = {0};
    int has_text = msg->text && *msg->text, has_html = msg->html && *msg->html;
    char *subject = mail_header_text(msg->subject ? msg->subject : "");

    if (!subject)
        return NULL;
    sb_date(&b, date);
    sb_mailbox(&b, "From: ", from_name, from_addr);
    sb_mailbox(&b, "To: ", msg->to_name, msg->to);
    sb_addf(&b, "Subject: ");
    sb_add(&b, subject);
    sb_add(&b, "\r\n");
    free(subject);
    sb_addf(&b, "Message-ID: <%s>\r\n", message_id);
    sb_add(&b, "MIME-Version: 1.0\r\n");
    if (has_text && has_html) {
        sb_addf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
        sb_addf(&b, "--%s\r\n", boundary);
        sb_part_headers(&b, "text/plain");
        sb_qp(&b, msg->text);
        sb_addf(&b, "--%s\r\n", boundary);
        sb_part_headers(&b, "text/html");
        sb_qp(&b, msg->html);
        sb_addf(&b, "--%s--\r\n", boundary);
    } else {
        sb_part_headers(&b, has_html ? "text/html" : "text/plain");
        sb_qp(&b, has_html ? msg->html : has_text ? msg->text : "");
    }
    return sb_take(&b);
}

void mail_breaker_init(struct mail_breaker *b, int threshold, int64_t cooloff_ms)
{
    *b = (struct mail_breaker){.threshold = threshold < 1 ? 1 : threshold,
                               .cooloff_ms = cooloff_ms < 1 ? 1 : cooloff_ms};
}

void mail_breaker_tick(struct mail_breaker *b, int64_t now_ms)
{
    if (b->state == MAIL_BRK_OPEN && now_ms >= b->until_ms) {
        b->state = MAIL_BRK_HALF_OPEN;
        b->probing = 0;
    }
}

int64_t mail_breaker_wait(const struct mail_breaker *b, int64_t now_ms)
{
    if (b->state == MAIL_BRK_OPEN)
        return now_ms >= b->until_ms ? 0 : b->until_ms - now_ms;
    if (b->state == MAIL_BRK_HALF_OPEN && b->probing)
        return b->cooloff_ms < MAIL_PROBE_WAIT_MS ? b->cooloff_ms : MAIL_PROBE_WAIT_MS;
    return 0;
}

int64_t mail_breaker_admit(struct mail_breaker *b, int64_t now_ms, int *probe)
{
    int64_t wait;
    *probe = 0;
    mail_breaker_tick(b, now_ms);
    if ((wait = mail_breaker_wait(b, now_ms)) > 0)
        return wait;
    if (b->state == MAIL_BRK_HALF_OPEN)
        *probe = b->probing = 1;
    return 0;
}

static void breaker_open(struct mail_breaker *b, int64_t now_ms, double u)
{
    b->state = MAIL_BRK_OPEN;
    b->failures = 0;
    b->probing = 0;
    b->until_ms = now_ms + b->cooloff_ms + (int64_t)(b->cooloff_ms * 0.2 * u);
}

void mail_breaker_record(struct mail_breaker *b, int64_t now_ms, enum mail_result r, int probe,
                         double u)
{
    if (r == MAIL_WAIT) {
        mail_breaker_release(b, probe);
        return;
    }
    if (probe && b->state == MAIL_BRK_HALF_OPEN) {
        if (r == MAIL_TRANSIENT)
            breaker_open(b, now_ms, u);
        else
            *b = (struct mail_breaker){.threshold = b->threshold, .cooloff_ms = b->cooloff_ms};
        return;
    }
    if (b->state != MAIL_BRK_CLOSED)
        return; /* admitted before it opened: the probe decides, not this */
    if (r != MAIL_TRANSIENT)
        b->failures = 0;
    else if (++b->failures >= b->threshold)
        breaker_open(b, now_ms, u);
}

void mail_breaker_release(struct mail_breaker *b, int probe)
{
    if (probe && b->state == MAIL_BRK_HALF_OPEN)
        b->probing = 0;
}

const char *mail_breaker_name(enum mail_brk s)
{
    return s == MAIL_BRK_OPEN ? "open" : s == MAIL_BRK_HALF_OPEN ? "half-open" : "closed";
}

void mail_bucket_init(struct mail_bucket *b, double rate, int64_t now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = rate / 10 > 1 ? rate / 10 : 1;
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

int64_t mail_bucket_take(struct mail_bucket *b, int64_t now_ms)
{
    int64_t wait;
    if (b->rate <= 0)
        return 0;
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_ms = now_ms;
    }
    if (b->tokens >= 1.0 - 1e-9) { /* sums of fractions fall a hair short of 1 */
        b->tokens -= 1.0;
        return 0;
    }
    wait = (int64_t)((1.0 - b->tokens) * 1000.0 / b->rate + 0.999);
    return wait < 1 ? 1 : wait;
}

/* ================================================================ the transport */

enum req_state { RQ_QUEUED, RQ_FLIGHT, RQ_LATER };

struct mail_req {
    struct mail *m;
    struct mail_req *prev, *next; /* every live request of m */
    struct mail_req *qnext;       /* the rate FIFO */
    enum req_state state;
    mail_done_fn *fn;
    void *ud;
    struct mail_msg msg; /* strings in `store` */
    char *store;
    int probe;

    CURL *easy;
    struct curl_slist *list; /* HTTP headers or SMTP recipients */
    char *payload;           /* JSON body or MIME message */
    size_t payload_len, payload_off;
    char resp[MAIL_RESP_MAX]; /* the start of the HTTP response body */
    size_t resp_len;
    char retry_after[64];
    char reply[256]; /* SMTP: the last reply line */
    char errbuf[CURL_ERROR_SIZE];

    ev_timer later; /* delivers an outcome that needed no transfer */
    struct mail_outcome out;
    char provider_id[128];
    char error[512];
};

struct mail {
    struct ev_loop *loop;
    enum cfg_mail_transport transport;
    struct curlev *cv;
    char from_name[256], from_addr[320];
    char *url;          /* sendgrid: .../v3/mail/send; smtp: smtp[s]://host:port/ehlo-name */
    char *api_key;      /* for scrubbing */
    struct curl_slist *http_headers;
    char *smtp_user, *smtp_password;
    enum cfg_starttls starttls;
    int smtps;
    STACK_OF(X509) *extra_ca;
    long timeout_ms;

    struct mail_breaker brk;
    ev_timer brk_timer; /* open -> half-open, so the state shown is current */
    struct mail_bucket bucket;
    struct mail_req *qhead, *qtail;
    ev_timer q_timer;

    struct mail_req *reqs;
    unsigned counter;
};

static int64_t now_ms(struct mail *m)
{
    return (int64_t)(ev_now(m->loop) * 1000.0);
}

static double jitter(void)
{
    return (double)rand() / ((double)RAND_MAX + 1.0);
}

/* n, or less so that s[0..n) does not end inside a UTF-8 character. */
static size_t utf8_whole(const char *s, size_t n)
{
    size_t k = n, need;
    unsigned char lead;
    while (k && ((unsigned char)s[k - 1] & 0xc0) == 0x80)
        k--;
    if (!k)
        return n;
    lead = (unsigned char)s[k - 1];
    need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return n - (k - 1) >= need ? n : k - 1;
}

/* Replaces every occurrence of secret in s (a NUL-terminated string in size
 * bytes) with "***". */
static void scrub(char *s, size_t size, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0, o = 0;
    char out[1024];

    if (!n || !strstr(s, secret))
        return;
    for (const char *p = s; *p && o + 4 < sizeof(out);) {
        if (strncmp(p, secret, n) == 0) {
            memcpy(out + o, "***", 3);
            o += 3;
            p += n;
        } else {
            out[o++] = *p++;
        }
    }
    if (o >= size)
        o = utf8_whole(out, size - 1);
    memcpy(s, out, o);
    s[o] = 0;
}

/*
 * Overwrites with '*' every copy of secret in the len bytes at s, and a start of
 * it (4 bytes or more) that ends them: a provider's text is cut at a fixed size
 * before we see it, and the cut may fall inside an echoed key. Same length, so
 * it works on raw buffers before they are parsed.
 */
static void mask_secret(char *s, size_t len, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;

    if (n == 0)
        return;
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(s + i, secret, n) == 0)
            memset(s + i, '*', n);
    for (size_t k = n - 1 < len ? n - 1 : len; k >= 4; k--) {
        if (memcmp(s + len - k, secret, k) == 0) {
            memset(s + len - k, '*', k);
            break;
        }
    }
}

/* A provider's text as one printable line: controls become spaces, runs of
 * spaces one, at most max bytes, never half a UTF-8 character. */
static void one_line(char *dst, size_t size, const char *s, size_t n, size_t max)
{
    size_t o = 0;
    if (max > size - 1)
        max = size - 1;
    for (size_t i = 0; i < n && o < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        if (c == ' ' && (o == 0 || dst[o - 1] == ' '))
            continue;
        dst[o++] = (char)c;
    }
    o = utf8_whole(dst, o);
    while (o && dst[o - 1] == ' ')
        o--;
    dst[o] = 0;
}

static void req_set_error(struct mail_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void req_set_error(struct mail_req *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    scrub(r->error, sizeof(r->error), r->m->api_key);
    scrub(r->error, sizeof(r->error), r->m->smtp_password);
    mask_secret(r->error, strlen(r->error), r->m->api_key);
    mask_secret(r->error, strlen(r->error), r->m->smtp_password);
    r->out.error = r->error;
}

static void req_unlink(struct mail_req *r)
{
    struct mail *m = r->m;
    if (r->prev)
        r->prev->next = r->next;
    else
        m->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static void req_free(struct mail_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->list);
    free(r->payload);
    free(r->store);
    free(r);
}

static void brk_log(struct mail *m, enum mail_brk before, const char *why)
{
    char q[300];
    if (m->brk.state == before)
        return;
    if (m->brk.state == MAIL_BRK_OPEN) {
        int64_t left = m->brk.until_ms - now_ms(m);
        LOG(LOG_WARN, "email breaker open", "transport=%s from=%s cooloff_ms=%lld reason=%s",
            mail_transport(m), mail_breaker_name(before), (long long)left,
            log_q(q, sizeof(q), why ? why : "", why ? strlen(why) : 0));
        ev_timer_stop(m->loop, &m->brk_timer);
        ev_timer_set(&m->brk_timer, left / 1000.0, 0);
        ev_timer_start(m->loop, &m->brk_timer);
    } else if (m->brk.state == MAIL_BRK_CLOSED) {
        LOG(LOG_INFO, "email breaker closed", "transport=%s", mail_transport(m));
    } else {
        LOG(LOG_INFO, "email breaker half-open", "transport=%s", mail_transport(m));
    }
}

static void on_brk_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct mail *m = t->data;
    enum mail_brk before = m->brk.state;
    (void)revents;
    mail_breaker_tick(&m->brk, now_ms(m));
    if (m->brk.state == MAIL_BRK_OPEN) { /* woke a millisecond early */
        ev_timer_set(t, 0.001, 0);
        ev_timer_start(loop, t);
        return;
    }
    brk_log(m, before, NULL);
}

/* Ends r: the breaker learns the outcome first, then the caller; then r is gone. */
static void req_finish(struct mail_req *r, int answered)
{
    struct mail *m = r->m;
    enum mail_brk before = m->brk.state;

    if (answered)
        mail_breaker_record(&m->brk, now_ms(m), r->out.result, r->probe, jitter());
    else
        mail_breaker_release(&m->brk, r->probe);
    brk_log(m, before, r->out.error);
    req_unlink(r);
    r->fn(r->ud, &r->out);
    req_free(r);
}

static void on_later(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    req_finish(t->data, 0);
}

/* Delivers an outcome that needed no transfer, from the loop. */
static void req_later(struct mail_req *r, enum mail_result res, int64_t delay_ms)
{
    r->state = RQ_LATER;
    r->out.result = res;
    r->out.delay_ms = delay_ms;
    ev_timer_set(&r->later, 0, 0);
    ev_timer_start(r->m->loop, &r->later);
}

/* ---------------------------------------------------------------- sendgrid */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct mail_req *r = ud;
    size_t len = size * n, room = sizeof(r->resp) - 1 - r->resp_len;
    memcpy(r->resp + r->resp_len, data, len < room ? len : room);
    r->resp_len += len < room ? len : room;
    r->resp[r->resp_len] = 0;
    return len;
}

/* Copies the value of header `name` (case-insensitive) from line into dst. */
static int header_value(const char *line, size_t n, const char *name, char *dst, size_t size)
{
    size_t k = strlen(name);
    const char *v;
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return 0;
    v = line + k + 1;
    n -= k + 1;
    trim(&v, &n);
    one_line(dst, size, v, n, size - 1);
    return 1;
}

static size_t on_http_header(char *data, size_t size, size_t n, void *ud)
{
    struct mail_req *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue): forget the last one's headers */
        r->provider_id[0] = r->retry_after[0] = 0;
        return len;
    }
    if (!header_value(data, len, "X-Message-Id", r->provider_id, sizeof(r->provider_id)))
        header_value(data, len, "Retry-After", r->retry_after, sizeof(r->retry_after));
    return len;
}

/* SendGrid's {"errors":[{"message":...},...]}, or the body as it is. */
static void sendgrid_snippet(struct mail_req *r, char *dst, size_t size)
{
    json_t *root, *errs, *e;
    struct sbuf b = {0};
    size_t i;

    mask_secret(r->resp, r->resp_len, r->m->api_key); /* before the text is cut again */
    root = json_loadb(r->resp, r->resp_len, 0, NULL);
    errs = json_is_object(root) ? json_object_get(root, "errors") : NULL;
    json_array_foreach(errs, i, e) {
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *field = json_string_value(json_object_get(e, "field"));
        if (!msg || i >= 3)
            continue;
        sb_add(&b, b.len ? "; " : "");
        if (field)
            sb_addf(&b, "%s: ", field);
        sb_add(&b, msg);
    }
    json_decref(root);
    if (b.p && b.len)
        one_line(dst, size, b.p, b.len, MAIL_SNIPPET_MAX);
    else
        one_line(dst, size, r->resp, r->resp_len, MAIL_SNIPPET_MAX);
    free(b.p);
}

static void sendgrid_classify(struct mail_req *r, CURLcode rc)
{
    long status = 0;
    char snip[MAIL_SNIPPET_MAX + 8];

    if (rc != CURLE_OK) {
        r->out.result = MAIL_TRANSIENT;
        req_set_error(r, "sendgrid: %s%s%s", curl_easy_strerror(rc), *r->errbuf ? ": " : "",
                      r->errbuf);
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        r->out.result = MAIL_SENT;
        r->out.provider_id = *r->provider_id ? r->provider_id : NULL;
        return;
    }
    sendgrid_snippet(r, snip, sizeof(snip));
    if (status == 429) {
        int64_t d = mail_retry_after_ms(r->retry_after, now_ms(r->m));
        r->out.result = MAIL_TRANSIENT;
        r->out.delay_ms = d < 0 ? 0 : d;
        req_set_error(r, "sendgrid: HTTP 429 (rate limited)%s%s", *snip ? ": " : "", snip);
        return;
    }
    /* a redirect or 1xx means a wrong base_url: keep the email, let ops fix it */
    r->out.result = status >= 400 && status < 500 ? MAIL_PERMANENT : MAIL_TRANSIENT;
    req_set_error(r, "sendgrid: HTTP %ld%s%s", status, *snip ? ": " : "", snip);
}

static int sendgrid_prepare(struct mail_req *r)
{
    struct mail *m = r->m;
    CURL *e = r->easy;
    if (!(r->payload = mail_sendgrid_json(&r->msg, m->from_name, m->from_addr))) {
        req_set_error(r, "sendgrid: the message is not valid UTF-8");
        return -1;
    }
    r->payload_len = strlen(r->payload);
    curl_easy_setopt(e, CURLOPT_URL, m->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, m->http_headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->payload);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->payload_len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_http_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    return 0;
}

/* ---------------------------------------------------------------- smtp */

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct mail_req *r = ud;
    size_t room = size * n, left = r->payload_len - r->payload_off;
    size_t k = left < room ? left : room;
    memcpy(buf, r->payload + r->payload_off, k);
    r->payload_off += k;
    return k;
}

/* curl hands every SMTP reply line to the header callback: keep the last one,
 * and the queue id of a "250 ... queued as ID" (Postfix, Exim, most relays). */
static size_t on_smtp_reply(char *data, size_t size, size_t n, void *ud)
{
    struct mail_req *r = ud;
    size_t len = size * n;
    const char *q;
    char line[sizeof(r->reply)];

    one_line(line, sizeof(line), data, len, sizeof(line) - 1);
    memcpy(r->reply, line, sizeof(line));
    if (strncmp(line, "250", 3) == 0 && (q = strstr(line, "queued as "))) {
        q += strlen("queued as ");
        size_t k = strcspn(q, " ;,>");
        if (k && k < sizeof(r->provider_id))
            copy_span(r->provider_id, sizeof(r->provider_id), q, k);
    }
    return len;
}

static void smtp_classify(struct mail_req *r, CURLcode rc)
{
    long code = 0;

    if (rc == CURLE_OK) {
        r->out.result = MAIL_SENT;
        r->out.provider_id = *r->provider_id ? r->provider_id : NULL;
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    r->out.result = code >= 500 && code < 600 ? MAIL_PERMANENT : MAIL_TRANSIENT;
    /* A refused login (530/534/535/538) is our configuration, not this email: transient,
     * so the breaker opens and the jobs wait for the fix instead of all going dead. */
    if (rc == CURLE_LOGIN_DENIED || code == 530 || code == 534 || code == 535 || code == 538)
        r->out.result = MAIL_TRANSIENT;
    if (code >= 400 && code < 600)
        req_set_error(r, "smtp: %s", r->reply);
    else
        req_set_error(r, "smtp: %s%s%s", curl_easy_strerror(rc), *r->errbuf ? ": " : "",
                      r->errbuf);
}

static CURLcode on_ssl_ctx(CURL *easy, void *ssl_ctx, void *ud)
{
    STACK_OF(X509) *certs = ud;
    X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
    (void)easy;
    for (int i = 0; store && i < sk_X509_num(certs); i++)
        X509_STORE_add_cert(store, sk_X509_value(certs, i)); /* a duplicate is no error */
    ERR_clear_error();
    return CURLE_OK;
}

static int smtp_prepare(struct mail_req *r)
{
    struct mail *m = r->m;
    CURL *e = r->easy;
    char id[256], boundary[64], rcpt[400];
    const char *domain = strchr(m->from_addr, '@');
    unsigned rnd = (unsigned)rand();

    snprintf(id, sizeof(id), "%lld.%d.%u.%08x@%s", (long long)now_ms(m), (int)getpid(),
             ++m->counter, rnd, domain ? domain + 1 : "steller.invalid");
    snprintf(boundary, sizeof(boundary), "=_steller_%08x%08x", rnd, (unsigned)rand());
    snprintf(rcpt, sizeof(rcpt), "<%s>", r->msg.to);
    r->payload = mail_mime(&r->msg, m->from_name, m->from_addr, time(NULL), id, boundary);
    if (!r->payload || !(r->list = curl_slist_append(NULL, rcpt))) {
        req_set_error(r, "smtp: out of memory");
        return -1;
    }
    r->payload_len = strlen(r->payload);
    snprintf(rcpt, sizeof(rcpt), "<%s>", m->from_addr);
    curl_easy_setopt(e, CURLOPT_URL, m->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, rcpt);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, r->list);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->payload_len);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_smtp_reply);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (!m->smtps)
        curl_easy_setopt(e, CURLOPT_USE_SSL, m->starttls == CFG_TLS_REQUIRED   ? CURLUSESSL_ALL
                                             : m->starttls == CFG_TLS_OPTIONAL ? CURLUSESSL_TRY
                                                                              : CURLUSESSL_NONE);
    if (m->extra_ca) {
        curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, m->extra_ca);
    }
    if (m->smtp_user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, m->smtp_user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, m->smtp_password);
    }
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void on_transfer(void *ud, CURL *easy, CURLcode rc)
{
    struct mail_req *r = ud;
    (void)easy;
    if (r->m->transport == CFG_MAIL_SENDGRID)
        sendgrid_classify(r, rc);
    else
        smtp_classify(r, rc);
    req_finish(r, 1);
}

/* The request leaves the rate FIFO: the breaker decides, then curl takes it. */
static void req_dispatch(struct mail_req *r)
{
    struct mail *m = r->m;
    enum mail_brk before = m->brk.state;
    int64_t wait = mail_breaker_admit(&m->brk, now_ms(m), &r->probe);
    int rc;

    brk_log(m, before, NULL);
    if (wait > 0) {
        req_set_error(r, "email transport %s is failing: breaker open", mail_transport(m));
        req_later(r, MAIL_WAIT, wait);
        return;
    }
    if (!(r->easy = curl_easy_init())) {
        req_set_error(r, "%s: out of memory", mail_transport(m));
        req_later(r, MAIL_TRANSIENT, 0);
        return;
    }
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, m->timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
    rc = m->transport == CFG_MAIL_SENDGRID ? sendgrid_prepare(r) : smtp_prepare(r);
    if (rc < 0) {
        req_later(r, m->transport == CFG_MAIL_SENDGRID ? MAIL_PERMANENT : MAIL_TRANSIENT, 0);
        return;
    }
    if (curlev_add(m->cv, r->easy, on_transfer, r) < 0) {
        req_set_error(r, "%s: curl refused the transfer", mail_transport(m));
        req_later(r, MAIL_TRANSIENT, 0);
        return;
    }
    r->state = RQ_FLIGHT;
}

/* Sends what the bucket allows from the head of the FIFO; re-arms for the rest. */
static void queue_drain(struct mail *m)
{
    int64_t wait = 0;
    ev_timer_stop(m->loop, &m->q_timer);
    while (m->qhead && (wait = mail_bucket_take(&m->bucket, now_ms(m))) == 0) {
        struct mail_req *r = m->qhead;
        if (!(m->qhead = r->qnext))
            m->qtail = NULL;
        req_dispatch(r);
    }
    if (m->qhead) {
        ev_timer_set(&m->q_timer, wait / 1000.0, 0);
        ev_timer_start(m->loop, &m->q_timer);
    }
}

static void on_q_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    queue_drain(t->data);
}

static void queue_push(struct mail_req *r)
{
    struct mail *m = r->m;
    r->state = RQ_QUEUED;
    r->qnext = NULL;
    if (m->qtail)
        m->qtail->qnext = r;
    else
        m->qhead = r;
    m->qtail = r;
}

static void queue_remove(struct mail_req *r)
{
    struct mail *m = r->m;
    struct mail_req **pp = &m->qhead, *prev = NULL;
    for (; *pp && *pp != r; pp = &(*pp)->qnext)
        prev = *pp;
    if (!*pp)
        return;
    *pp = r->qnext;
    if (m->qtail == r)
        m->qtail = prev;
}

static char *dup_or_null(char **at, const char *s)
{
    size_t n;
    if (!s)
        return NULL;
    n = strlen(s) + 1;
    memcpy(*at, s, n);
    *at += n;
    return *at - n;
}

static struct mail_req *req_new(struct mail *m, const struct mail_msg *msg, mail_done_fn *fn,
                                void *ud)
{
    const char *f[] = {msg->to, msg->to_name, msg->subject, msg->text, msg->html};
    size_t total = 0;
    struct mail_req *r = calloc(1, sizeof(*r));
    char *at;

    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        total += f[i] ? strlen(f[i]) + 1 : 0;
    if (!r || !(r->store = malloc(total ? total : 1))) {
        free(r);
        return NULL;
    }
    at = r->store;
    r->msg.to = dup_or_null(&at, msg->to ? msg->to : "");
    r->msg.to_name = dup_or_null(&at, msg->to_name);
    r->msg.subject = dup_or_null(&at, msg->subject ? msg->subject : "");
    r->msg.text = dup_or_null(&at, msg->text);
    r->msg.html = dup_or_null(&at, msg->html);
    r->m = m;
    r->fn = fn;
    r->ud = ud;
    ev_init(&r->later, on_later);
    r->later.data = r;
    r->next = m->reqs;
    if (m->reqs)
        m->reqs->prev = r;
    m->reqs = r;
    return r;
}

/* The log transport: one logfmt line, like the API's mock sender. */
static void log_message(const struct mail_msg *msg)
{
    char to[400], subject[600], text[2800];
    LOG(LOG_INFO, "email (log transport)", "to=%s subject=%s text=%s",
        log_q(to, sizeof(to), msg->to, strlen(msg->to)),
        log_q(subject, sizeof(subject), msg->subject, strlen(msg->subject)),
        log_q(text, sizeof(text), msg->text ? msg->text : "", msg->text ? strlen(msg->text) : 0));
}

struct mail_req *mail_send(struct mail *m, const struct mail_msg *msg, mail_done_fn *fn, void *ud)
{
    struct mail_req *r = req_new(m, msg, fn, ud);
    int64_t wait;

    if (!r)
        return NULL;
    if (!*r->msg.to || strpbrk(r->msg.to, "\r\n<>") ||
        (r->msg.to_name && strpbrk(r->msg.to_name, "\r\n")) || strpbrk(r->msg.subject, "\r\n")) {
        req_set_error(r, "a recipient or subject with a line break or no address");
        req_later(r, MAIL_PERMANENT, 0);
        return r;
    }
    if (m->transport == CFG_MAIL_LOG) {
        log_message(&r->msg);
        req_later(r, MAIL_SENT, 0);
        return r;
    }
    if ((wait = mail_breaker_wait(&m->brk, now_ms(m))) > 0) {
        req_set_error(r, "email transport %s is failing: breaker %s", mail_transport(m),
                      mail_breaker_name(m->brk.state));
        req_later(r, MAIL_WAIT, wait);
        return r;
    }
    if (!m->qhead && mail_bucket_take(&m->bucket, now_ms(m)) == 0) {
        req_dispatch(r);
        return r;
    }
    queue_push(r);
    if (!ev_is_active(&m->q_timer))
        queue_drain(m);
    return r;
}

void mail_cancel(struct mail_req *r)
{
    struct mail *m;
    if (!r)
        return;
    m = r->m;
    if (r->state == RQ_QUEUED)
        queue_remove(r);
    else if (r->state == RQ_FLIGHT)
        curlev_remove(m->cv, r->easy);
    ev_timer_stop(m->loop, &r->later);
    mail_breaker_release(&m->brk, r->probe);
    req_unlink(r);
    req_free(r);
}

/* ---------------------------------------------------------------- setup */

static int load_extra_ca(struct mail *m, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    X509 *x;

    if (!f) {
        snprintf(err, errlen, "email.smtp.ca_file %s: %s", path, strerror(errno));
        return -1;
    }
    m->extra_ca = sk_X509_new_null();
    while (m->extra_ca && (x = PEM_read_X509(f, NULL, NULL, NULL)))
        if (!sk_X509_push(m->extra_ca, x))
            X509_free(x);
    fclose(f);
    ERR_clear_error(); /* the end of the file reads as an error */
    if (!m->extra_ca || sk_X509_num(m->extra_ca) == 0) {
        snprintf(err, errlen, "email.smtp.ca_file %s: no PEM certificate in it", path);
        return -1;
    }
    if (strncmp(curl_version_info(CURLVERSION_NOW)->ssl_version, "OpenSSL", 7) != 0) {
        snprintf(err, errlen, "email.smtp.ca_file needs libcurl built with OpenSSL");
        return -1;
    }
    return 0;
}

static int has_scheme(const char *s, const char *scheme)
{
    return strncasecmp(s, scheme, strlen(scheme)) == 0;
}

/* smtp[s]://host:port/EHLO-NAME from email.smtp.server and email.smtp.port. */
static int smtp_url(struct mail *m, const struct config *c, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *port = NULL, *user = NULL, *pass = NULL, ehlo[256] = "localhost", path[260];
    int rc = -1;

    if (!u)
        goto out;
    m->smtps = has_scheme(c->email_smtp_server, "smtps://");
    if (m->smtps || has_scheme(c->email_smtp_server, "smtp://")) {
        if (curl_url_set(u, CURLUPART_URL, c->email_smtp_server, 0) != CURLUE_OK) {
            snprintf(err, errlen, "email.smtp.server: not a valid smtp:// or smtps:// URL");
            goto out;
        }
    } else if (curl_url_set(u, CURLUPART_SCHEME, "smtp", 0) != CURLUE_OK ||
               curl_url_set(u, CURLUPART_HOST, c->email_smtp_server, 0) != CURLUE_OK) {
        snprintf(err, errlen, "email.smtp.server: not a host name or smtp:// URL");
        goto out;
    }
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
    if (user || pass) {
        /* never echo the URL: it holds a password */
        snprintf(err, errlen, "email.smtp.server: credentials belong in email.smtp.user and "
                              "email.smtp.password, not in the URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK) {
        char p[16];
        snprintf(p, sizeof(p), "%d", c->email_smtp_port);
        curl_url_set(u, CURLUPART_PORT, p, 0);
    }
    /* curl greets with the URL's path as the EHLO name (else "localhost") */
    if (gethostname(ehlo, sizeof(ehlo)) != 0 || !*ehlo || strpbrk(ehlo, "/?#% "))
        snprintf(ehlo, sizeof(ehlo), "localhost");
    ehlo[sizeof(ehlo) - 1] = 0;
    snprintf(path, sizeof(path), "/%s", ehlo);
    curl_url_set(u, CURLUPART_PATH, path, 0);
    if (curl_url_get(u, CURLUPART_URL, &m->url, 0) != CURLUE_OK) {
        snprintf(err, errlen, "email.smtp.server: not a valid server");
        goto out;
    }
    rc = 0;
out:
    curl_free(port);
    curl_free(user);
    curl_free(pass);
    curl_url_cleanup(u);
    if (rc < 0 && !*err)
        snprintf(err, errlen, "out of memory");
    return rc;
}

static int sendgrid_setup(struct mail *m, const struct config *c, char *err, size_t errlen)
{
    const char *base = c->email_sendgrid_base_url;
    size_t n = strlen(base);
    struct sbuf auth = {0};
    struct curl_slist *h = NULL;

    while (n && base[n - 1] == '/')
        n--;
    if (!(m->url = malloc(n + sizeof("/v3/mail/send"))) ||
        !(m->api_key = strdup(c->email_sendgrid_api_key))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(m->url, base, n);
    strcpy(m->url + n, "/v3/mail/send");
    sb_add(&auth, "Authorization: Bearer ");
    sb_add(&auth, m->api_key);
    if (!auth.failed) {
        h = curl_slist_append(NULL, auth.p);
        h = h ? curl_slist_append(h, "Content-Type: application/json") : NULL;
        h = h ? curl_slist_append(h, "Accept: application/json") : NULL;
        h = h ? curl_slist_append(h, "Expect:") : NULL; /* no 100-continue round trip */
    }
    if (auth.p)
        explicit_bzero(auth.p, auth.len);
    free(auth.p);
    if (!(m->http_headers = h)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int smtp_setup(struct mail *m, const struct config *c, char *err, size_t errlen)
{
    m->starttls = c->email_smtp_starttls;
    if (*c->email_smtp_user && (!(m->smtp_user = strdup(c->email_smtp_user)) ||
                                !(m->smtp_password = strdup(c->email_smtp_password)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (smtp_url(m, c, err, errlen) < 0)
        return -1;
    if (*c->email_smtp_ca_file && load_extra_ca(m, c->email_smtp_ca_file, err, errlen) < 0)
        return -1;
    return 0;
}

struct mail *mail_new(struct ev_loop *loop, const struct config *c, char *err, size_t errlen)
{
    struct mail *m = calloc(1, sizeof(*m));
    double rate;
    int rc = 0;

    if (errlen)
        *err = 0;
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->transport = c->email_transport == CFG_MAIL_AUTO ? CFG_MAIL_LOG : c->email_transport;
    m->timeout_ms = (long)(c->email_timeout * 1000.0);
    if (m->timeout_ms < 1)
        m->timeout_ms = 1;
    ev_init(&m->q_timer, on_q_timer);
    m->q_timer.data = m;
    ev_init(&m->brk_timer, on_brk_timer);
    m->brk_timer.data = m;
    mail_breaker_init(&m->brk, c->email_breaker_failures,
                      (int64_t)(c->email_breaker_cooloff * 1000.0));
    rate = c->email_rate_per_second / (c->workers > 0 ? c->workers : 1);
    mail_bucket_init(&m->bucket, rate, now_ms(m));
    if (mail_parse_from(c->email_from, m->from_name, sizeof(m->from_name), m->from_addr,
                        sizeof(m->from_addr)) < 0 ||
        strpbrk(m->from_addr, "<>\r\n")) {
        snprintf(err, errlen, "email.from: not \"addr\" or \"Name <addr>\"");
        rc = -1;
    }
    if (!rc && m->transport == CFG_MAIL_SENDGRID)
        rc = sendgrid_setup(m, c, err, errlen);
    else if (!rc && m->transport == CFG_MAIL_SMTP)
        rc = smtp_setup(m, c, err, errlen);
    if (!rc && m->transport != CFG_MAIL_LOG && !(m->cv = curlev_new(loop))) {
        snprintf(err, errlen, "cannot start libcurl");
        rc = -1;
    }
    if (rc < 0) {
        mail_free(m);
        return NULL;
    }
    if (m->cv)
        curl_multi_setopt(curlev_multi(m->cv), CURLMOPT_MAXCONNECTS, (long)MAIL_MAX_CONNECTS);
    if (m->cv && !(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_ASYNCHDNS))
        LOG(LOG_WARN, "libcurl resolves names synchronously: the loop blocks on DNS", NULL);
    return m;
}

static void free_secret(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

void mail_free(struct mail *m)
{
    if (!m)
        return;
    while (m->reqs)
        mail_cancel(m->reqs);
    ev_timer_stop(m->loop, &m->q_timer);
    ev_timer_stop(m->loop, &m->brk_timer);
    curlev_free(m->cv);
    if (m->http_headers)
        explicit_bzero(m->http_headers->data, strlen(m->http_headers->data));
    curl_slist_free_all(m->http_headers);
    free(m->url);
    free_secret(m->api_key);
    free(m->smtp_user);
    free_secret(m->smtp_password);
    if (m->extra_ca)
        sk_X509_pop_free(m->extra_ca, X509_free);
    free(m);
}

const char *mail_transport(const struct mail *m)
{
    return cfg_mail_transport_name(m->transport);
}

const char *mail_breaker_state(const struct mail *m)
{
    return mail_breaker_name(m->brk.state);
}
