/*
 * jobstats.c - per-type counters and histograms: recorded by each worker,
 * shipped to the master over a pipe, summed there (see jobstats.h).
 *
 * The wire record is a plain struct: the master and its workers are one
 * binary, forked, so they agree on its layout. A magic number guards against
 * a misaligned read; the master then drops what it holds and resynchronises on
 * the next read.
 */
#include "jobstats.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry.h"

#define JS_MAGIC 0x4a535431u /* "JST1" */

const char *const js_outcome_names[JS_NOUTCOMES] = {"ok", "retried", "dead", "deferred"};
const double js_bounds[JS_NBUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                           1,     2.5,  5,     10,   30,  60};

struct js_record {
    uint32_t magic;
    int32_t pid;
    char name[JS_NAME_MAX];
    struct js_figures f;
};

_Static_assert(sizeof(struct js_record) <= PIPE_BUF, "a record must be one atomic write");
_Static_assert(sizeof(struct js_record) <= sizeof(((struct js_table *)0)->buf),
               "the table must hold one record");

static void js_observe(struct js_hist *h, double v)
{
    int i = 0;
    while (i < JS_NBUCKETS - 1 && v > js_bounds[i])
        i++;
    h->buckets[i]++;
    h->sum += v;
    h->count++;
}

uint64_t js_cumulative(const struct js_hist *h, int i)
{
    uint64_t n = 0;
    for (int b = 0; b <= i; b++)
        n += h->buckets[b];
    return n;
}

static struct js_figures *js_slot(struct js_worker *s, const struct job *job)
{
    size_t i;
    if (!job->type)
        return NULL; /* rejected before its type was known */
    i = reg_index(job->type);
    return i < JS_MAX_TYPES ? &s->t[i] : NULL;
}

void js_run_started(struct js_worker *s, const struct job *job, int64_t now_ms)
{
    struct js_figures *f = js_slot(s, job);
    if (f && (job->env.has & ENV_HAS_CREATED_AT) && job->env.created_at <= now_ms)
        js_observe(&f->wait, (double)(now_ms - job->env.created_at) / 1000.0);
}

void js_run_ended(struct js_worker *s, const struct job *job, enum js_outcome o, int64_t now_ms)
{
    struct js_figures *f = js_slot(s, job);
    if (!f)
        return;
    f->runs[o]++;
    if (now_ms >= job->started_ms)
        js_observe(&f->run, (double)(now_ms - job->started_ms) / 1000.0);
}

static void js_send(struct js_worker *s)
{
    struct js_record r;
    const struct job_type *t;
    if (s->fd < 0)
        return;
    for (size_t i = 0; i < JS_MAX_TYPES && (t = reg_at(i)); i++) {
        memset(&r, 0, sizeof(r));
        r.magic = JS_MAGIC;
        r.pid = (int32_t)getpid();
        snprintf(r.name, sizeof(r.name), "%s", t->name);
        r.f = s->t[i];
        /* EAGAIN: the pipe is full; the next snapshot carries the same totals. */
        if (write(s->fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
            return;
    }
}

static void js_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    js_send(t->data);
}

void js_worker_start(struct js_worker *s, struct ev_loop *loop, int fd)
{
    s->fd = fd;
    ev_timer_init(&s->timer, js_on_timer, 1.0, 1.0);
    s->timer.data = s;
    if (fd >= 0) {
        ev_timer_start(loop, &s->timer);
        ev_unref(loop); /* the timer alone must not keep the loop running */
    }
}

void js_worker_stop(struct js_worker *s, struct ev_loop *loop)
{
    if (s->fd < 0)
        return;
    js_send(s);
    ev_ref(loop);
    ev_timer_stop(loop, &s->timer);
    close(s->fd);
    s->fd = -1;
}

/* ---- master side ---- */

static struct js_entry *js_find(struct js_table *t, pid_t pid, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (t->e[i].pid == pid && strcmp(t->e[i].name, name) == 0)
            return &t->e[i];
    return NULL;
}

static struct js_entry *js_add(struct js_table *t, pid_t pid, const char *name)
{
    struct js_entry *e = js_find(t, pid, name);
    if (e)
        return e;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        struct js_entry *p = realloc(t->e, (size_t)cap * sizeof(*p));
        if (!p)
            return NULL;
        t->e = p;
        t->cap = cap;
    }
    e = &t->e[t->n++];
    memset(e, 0, sizeof(*e));
    e->pid = pid;
    snprintf(e->name, sizeof(e->name), "%s", name);
    return e;
}

static void js_take(struct js_table *t, const struct js_record *r)
{
    struct js_entry *e;
    char name[JS_NAME_MAX];
    if (r->pid <= 0)
        return;
    memcpy(name, r->name, sizeof(name));
    name[sizeof(name) - 1] = '\0';
    if ((e = js_add(t, r->pid, name)))
        e->f = r->f;
}

void js_table_read(struct js_table *t, int fd)
{
    const size_t size = sizeof(struct js_record);
    ssize_t n;
    for (;;) {
        n = read(fd, t->buf + t->have, size - t->have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        t->have += (size_t)n;
        if (t->have < size)
            continue;
        struct js_record r;
        memcpy(&r, t->buf, size);
        t->have = 0;
        if (r.magic == JS_MAGIC)
            js_take(t, &r);
    }
}

static void js_hist_add(struct js_hist *to, const struct js_hist *from)
{
    for (int i = 0; i < JS_NBUCKETS; i++)
        to->buckets[i] += from->buckets[i];
    to->sum += from->sum;
    to->count += from->count;
}

static void js_figures_add(struct js_figures *to, const struct js_figures *from)
{
    for (int i = 0; i < JS_NOUTCOMES; i++)
        to->runs[i] += from->runs[i];
    js_hist_add(&to->run, &from->run);
    js_hist_add(&to->wait, &from->wait);
}

void js_table_exited(struct js_table *t, pid_t pid)
{
    for (int i = 0; i < t->n;) {
        struct js_entry gone = t->e[i], *sum;
        if (pid <= 0 || gone.pid != pid) {
            i++;
            continue;
        }
        t->e[i] = t->e[--t->n];
        if ((sum = js_add(t, 0, gone.name)))
            js_figures_add(&sum->f, &gone.f);
    }
}

static int js_by_name(const void *a, const void *b)
{
    return strcmp(((const struct js_entry *)a)->name, ((const struct js_entry *)b)->name);
}

int js_table_sum(const struct js_table *t, struct js_entry *out, int max)
{
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        int j = 0;
        while (j < n && strcmp(out[j].name, t->e[i].name) != 0)
            j++;
        if (j == n) {
            if (n == max)
                continue;
            memset(&out[n], 0, sizeof(out[n]));
            snprintf(out[n].name, sizeof(out[n].name), "%s", t->e[i].name);
            n++;
        }
        js_figures_add(&out[j].f, &t->e[i].f);
    }
    qsort(out, (size_t)n, sizeof(*out), js_by_name);
    return n;
}

void js_table_free(struct js_table *t)
{
    free(t->e);
    memset(t, 0, sizeof(*t));
}
