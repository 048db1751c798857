/*
 * cron.c - see cron.h. Each field becomes a bit set; cron_next() walks forward
 * from the next minute, jumping a whole day when the day does not match and a
 * whole hour when the hour does not, so a search over years stays short;
 * cron_prev() walks backward the same way.
 */
#include "cron.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How far cron_next() and cron_prev() look. Feb 29 can be 8 years away (2096 to
 * 2104: 2100 is no leap year), and the search must end for "0 0 30 2 *". */
#define CRON_HORIZON (9LL * 366 * 86400)

struct cron_field {
    int pos; /* 1-based, for messages */
    const char *name;
    int lo, hi;
};

static const struct cron_field cron_fields[5] = {
    {1, "minute", 0, 59}, {2, "hour", 0, 23},       {3, "day of month", 1, 31},
    {4, "month", 1, 12},  {5, "day of week", 0, 7},
};

static int cron_num(const char **p, int *out)
{
    char *end;
    long v;

    if (**p < '0' || **p > '9') /* strtol would also take spaces and signs */
        return -1;
    errno = 0;
    v = strtol(*p, &end, 10);
    if (errno || v > 1000)
        return -1;
    *p = end;
    *out = (int)v;
    return 0;
}

/* Checks a-b against the field's bounds; 0, or -1 with why in err. */
static int cron_bounds(const struct cron_field *f, int a, int b, char *err, size_t errlen)
{
    int bad = a < f->lo || a > f->hi ? a : b < f->lo || b > f->hi ? b : -1;

    if (bad >= 0) {
        snprintf(err, errlen, "field %d (%s): %d is out of range %d-%d", f->pos, f->name, bad,
                 f->lo, f->hi);
        return -1;
    }
    if (a > b) {
        snprintf(err, errlen, "field %d (%s): range %d-%d runs backwards", f->pos, f->name, a, b);
        return -1;
    }
    return 0;
}

/* One comma-separated item: "*", "n", "a-b", each optionally "/step". */
static int cron_item(const char **p, const struct cron_field *f, uint64_t *bits, char *err,
                     size_t errlen)
{
    int a = f->lo, b = f->hi, step = 1, single = 0;

    if (**p == '*') {
        (*p)++;
    } else {
        if (cron_num(p, &a) < 0)
            goto bad;
        b = a;
        single = 1;
        if (**p == '-') {
            (*p)++;
            if (cron_num(p, &b) < 0)
                goto bad;
            single = 0;
        }
    }
    if (**p == '/') {
        (*p)++;
        if (cron_num(p, &step) < 0 || step == 0) {
            snprintf(err, errlen, "field %d (%s): a step is a whole number from 1", f->pos,
                     f->name);
            return -1;
        }
        if (single)
            b = f->hi; /* "5/15": from 5 to the end, as Vixie cron reads it */
    }
    if (cron_bounds(f, a, b, err, errlen) < 0)
        return -1;
    for (int v = a; v <= b; v += step)
        *bits |= 1ULL << v;
    return 0;
bad:
    snprintf(err, errlen, "field %d (%s): expected *, a number or a-b, each with an optional /step",
             f->pos, f->name);
    return -1;
}

static int cron_field_parse(const char *text, size_t len, const struct cron_field *f,
                            uint64_t *bits, int *star, char *err, size_t errlen)
{
    char buf[128];
    const char *p = buf;

    if (len >= sizeof buf) {
        snprintf(err, errlen, "field %d (%s): too long", f->pos, f->name);
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    *bits = 0;
    /* As in Vixie cron, a day field that starts with '*' ("*", "*\/2") counts as
     * unrestricted for the rule that joins the two day fields. */
    *star = buf[0] == '*';
    for (;;) {
        if (cron_item(&p, f, bits, err, errlen) < 0)
            return -1;
        if (*p == '\0')
            return 0;
        if (*p++ != ',') {
            snprintf(err, errlen, "field %d (%s): unexpected '%c'", f->pos, f->name, p[-1]);
            return -1;
        }
    }
}

int cron_parse(const char *expr, struct cron *c, char *err, size_t errlen)
{
    uint64_t bits[5];
    int star[5], n = 0;
    const char *p = expr ? expr : "";

    memset(c, 0, sizeof *c);
    while (n < 5) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (len == 0)
            break;
        if (cron_field_parse(p, len, &cron_fields[n], &bits[n], &star[n], err, errlen) < 0)
            return -1;
        p += len;
        n++;
    }
    p += strspn(p, " \t");
    if (n != 5 || *p) {
        snprintf(err, errlen,
                 "needs five fields: minute hour day-of-month month day-of-week "
                 "(got %s)",
                 n < 5 ? "fewer" : "more");
        return -1;
    }
    c->minute = bits[0];
    c->hour = (uint32_t)bits[1];
    c->mday = (uint32_t)bits[2];
    c->month = (uint16_t)bits[3];
    c->wday = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
    c->mday_star = (uint8_t)star[2];
    c->wday_star = (uint8_t)star[4];
    return 0;
}

static int cron_day_matches(const struct cron *c, const struct tm *tm)
{
    int md = (c->mday >> tm->tm_mday) & 1, wd = (c->wday >> tm->tm_wday) & 1;

    if (!((c->month >> (tm->tm_mon + 1)) & 1))
        return 0;
    if (c->mday_star || c->wday_star)
        return md && wd;
    return md || wd; /* both restricted: either will do (Vixie) */
}

int64_t cron_next(const struct cron *c, int64_t t)
{
    int64_t s = t < 0 ? 0 : (t / 60 + 1) * 60, limit = t + CRON_HORIZON;
    struct tm tm;

    while (s <= limit) {
        time_t tt = (time_t)s;
        gmtime_r(&tt, &tm);
        if (!cron_day_matches(c, &tm)) {
            s += 86400 - (tm.tm_hour * 3600 + tm.tm_min * 60);
            continue;
        }
        if (!((c->hour >> tm.tm_hour) & 1)) {
            s += 3600 - tm.tm_min * 60;
            continue;
        }
        if ((c->minute >> tm.tm_min) & 1)
            return s;
        s += 60;
    }
    return -1;
}

int64_t cron_prev(const struct cron *c, int64_t t)
{
    int64_t s = t / 60 * 60, limit = t - CRON_HORIZON;
    struct tm tm;

    if (t < 0)
        return -1;
    while (s >= limit && s >= 0) {
        time_t tt = (time_t)s;
        gmtime_r(&tt, &tm);
        if (!cron_day_matches(c, &tm)) {
            s -= tm.tm_hour * 3600 + tm.tm_min * 60 + 60; /* 23:59 the day before */
            continue;
        }
        if (!((c->hour >> tm.tm_hour) & 1)) {
            s -= tm.tm_min * 60 + 60; /* minute 59 of the hour before */
            continue;
        }
        if ((c->minute >> tm.tm_min) & 1)
            return s;
        s -= 60;
    }
    return -1;
}
