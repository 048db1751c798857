/*
 * mail_probe.c - drives worker/mail.c on a libev loop for
 * tests/integration/test_mail_transport.py.
 *
 *   mail_probe [-n N] [-s] [-w] [-c K] [-t TO] [-u SUBJECT] [-x TEXT] [-m HTML] CONFIG
 *
 * Loads CONFIG with cfg_load() (so the environment overrides apply), makes a
 * mail transport and sends N messages (default 1): all at once, or with -s one
 * after the other's outcome. -w (with -s): a MAIL_WAIT is printed, then the same
 * message is sent again after delay_ms (at most 50 times in all). -c K cancels
 * the first K requests at once; their callbacks must never run.
 *
 * Prints one line per outcome, in logfmt:
 *   n=3 result=sent delay_ms=0 provider_id=abc breaker=closed error=-
 * and last "done sent=S permanent=P transient=T wait=W". Exits 0 when every
 * message got its outcome, 1 on a usage or setup error, 2 after 60 s.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mail.h"

struct probe {
    struct ev_loop *loop;
    struct mail *mail;
    struct mail_msg msg;
    int n, serial, follow_wait, cancel;
    int started, finished, waits_left;
    int count[4];
    ev_timer resend;
};

struct one {
    struct probe *p;
    int i, cancelled;
};

static const char *const names[] = {"sent", "permanent", "transient", "wait"};

static void send_one(struct probe *p, int i);

static void on_done(void *ud, const struct mail_outcome *o)
{
    struct one *one = ud;
    struct probe *p = one->p;
    char q[600];

    if (one->cancelled) {
        printf("n=%d result=BUG-callback-after-cancel\n", one->i);
        fflush(stdout);
        return;
    }
    printf("n=%d result=%s delay_ms=%lld provider_id=%s breaker=%s error=%s\n", one->i,
           names[o->result], (long long)o->delay_ms, o->provider_id ? o->provider_id : "-",
           mail_breaker_state(p->mail),
           o->error ? log_q(q, sizeof(q), o->error, strlen(o->error)) : "-");
    fflush(stdout);
    p->count[o->result]++;
    if (o->result == MAIL_WAIT && p->serial && p->follow_wait && p->waits_left-- > 0) {
        ev_timer_set(&p->resend, o->delay_ms / 1000.0, 0);
        p->resend.data = one;
        ev_timer_start(p->loop, &p->resend);
        return;
    }
    free(one);
    p->finished++;
    if (p->finished == p->n - p->cancel)
        ev_break(p->loop, EVBREAK_ALL);
    else if (p->serial && p->started < p->n)
        send_one(p, p->started);
}

static void on_resend(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct one *one = t->data;
    (void)loop;
    (void)revents;
    if (!mail_send(one->p->mail, &one->p->msg, on_done, one)) {
        fprintf(stderr, "mail_send: out of memory\n");
        exit(1);
    }
}

static void send_one(struct probe *p, int i)
{
    struct one *one = calloc(1, sizeof(*one));
    struct mail_req *r;
    if (!one || !(r = mail_send(p->mail, &p->msg, on_done, one))) {
        fprintf(stderr, "mail_send: out of memory\n");
        exit(1);
    }
    one->p = p;
    one->i = i;
    p->started++;
    if (i < p->cancel) {
        one->cancelled = 1;
        mail_cancel(r);
        free(one);
    }
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    printf("timeout\n");
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    struct probe p = {.n = 1, .waits_left = 50};
    struct config c;
    char err[512];
    ev_timer deadline;
    int opt, lvl, rc;

    p.msg = (struct mail_msg){.to = "partner@example.com", .to_name = "Ada Partner",
                              .subject = "Welcome to Steller",
                              .text = "Hello Ada,\nwelcome aboard.\n",
                              .html = "<p>Hello Ada,</p><p>welcome aboard.</p>"};
    while ((opt = getopt(argc, argv, "n:swc:t:u:x:m:")) != -1) {
        switch (opt) {
        case 'n': p.n = atoi(optarg); break;
        case 's': p.serial = 1; break;
        case 'w': p.follow_wait = 1; break;
        case 'c': p.cancel = atoi(optarg); break;
        case 't': p.msg.to = optarg; break;
        case 'u': p.msg.subject = optarg; break;
        case 'x': p.msg.text = optarg; break;
        case 'm': p.msg.html = optarg; break;
        default: optind = argc + 1;
        }
    }
    if (optind != argc - 1 || p.n < 1 || p.cancel < 0 || p.cancel > p.n ||
        (p.serial && p.cancel)) {
        fprintf(stderr, "usage: mail_probe [-n N] [-s] [-w] [-c K] [-t TO] [-u SUBJECT] "
                        "[-x TEXT] [-m HTML] CONFIG\n");
        return 1;
    }
    if (cfg_load(&c, argv[optind], err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    if ((lvl = log_level_parse(c.log_level)) >= 0)
        log_threshold = (enum log_level)lvl;
    p.loop = ev_loop_new(EVFLAG_AUTO);
    if (!(p.mail = mail_new(p.loop, &c, err, sizeof(err)))) {
        fprintf(stderr, "mail_new: %s\n", err);
        cfg_free(&c);
        ev_loop_destroy(p.loop);
        return 1;
    }
    ev_init(&p.resend, on_resend);
    ev_timer_init(&deadline, on_deadline, 60.0, 0);
    ev_timer_start(p.loop, &deadline);
    for (int i = 0; i < (p.serial ? 1 : p.n); i++)
        send_one(&p, i);
    if (p.finished < p.n - p.cancel)
        ev_run(p.loop, 0);
    rc = p.finished == p.n - p.cancel ? 0 : 2;
    printf("done sent=%d permanent=%d transient=%d wait=%d\n", p.count[MAIL_SENT],
           p.count[MAIL_PERMANENT], p.count[MAIL_TRANSIENT], p.count[MAIL_WAIT]);
    ev_timer_stop(p.loop, &p.resend);
    mail_free(p.mail); /* frees nothing of ours still in flight on a timeout: fine for a probe */
    ev_timer_stop(p.loop, &deadline);
    ev_loop_destroy(p.loop);
    cfg_free(&c);
    return rc;
}
