/*
 * cron.h - five-field cron expressions in UTC: "minute hour day-of-month month
 * day-of-week", each field "*", a number, a range "a-b", a step "*\/n" or "a-b/n",
 * or a comma list of those. Day of week 0-7 (0 and 7 are Sunday). Names (JAN,
 * MON) are not accepted. As in Vixie cron, when both day fields are restricted a
 * day matches if either matches.
 *
 * A day field that starts with '*' ("*", "*\/2") counts as unrestricted for
 * that rule. "a/n" means a to the field's end in steps of n.
 *
 * Pure: no clock, no allocation. A parsed expression is plain data.
 */
#ifndef STELLER_CRON_H
#define STELLER_CRON_H

#include <stddef.h>
#include <stdint.h>

struct cron {
    uint64_t minute; /* bit n: minute n matches */
    uint32_t hour;
    uint32_t mday;   /* bits 1..31 */
    uint16_t month;  /* bits 1..12 */
    uint8_t wday;    /* bits 0..6, Sunday = 0 */
    uint8_t mday_star, wday_star;
};

/* 0, or -1 with why (e.g. "field 2 (hour): 24 is out of range 0-23") in err.
 * expr NULL reads as "". */
int cron_parse(const char *expr, struct cron *c, char *err, size_t errlen);

/* The first matching minute strictly after t (seconds since the epoch, UTC), as
 * seconds since the epoch; -1 if none within the next 9 years (e.g. "0 0 30 2 *";
 * 9 years reach every Feb 29, 2100 being no leap year). */
int64_t cron_next(const struct cron *c, int64_t t);

/* The latest matching minute at or before t (t itself when t is a matching
 * minute's first second or later within it); -1 if none within the 9 years
 * before t, or t < 0. */
int64_t cron_prev(const struct cron *c, int64_t t);

#endif
