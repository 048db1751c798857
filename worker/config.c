/*
 * config.c - loads, checks and prints the daemon's configuration (SPEC §7).
 *
 * keys[] below is the whole configuration, as in Redis's config.c. A row names a
 * key as written in the file ("redis.url" is key url in group redis), its type,
 * where it lives in struct config, its default (as text), its bounds, the
 * environment variable that overrides it and whether it is secret. cfg_load()
 * applies the defaults, then walks the file, then reads the environment, then
 * checks what spans several keys; cfg_print() walks the same table. Adding a key
 * is a field in config.h, a row here and its documentation in
 * conf/steller-worker.conf (a unit test checks that the sample names every key).
 *
 * Every value takes the same two steps whatever its source: its type reads it into
 * a union val (from a libconfig setting, or from text for defaults and the
 * environment), then the type's store() checks it and writes it into the struct.
 * So a default, a file value and an environment value obey the same rules.
 *
 * The file is walked setting by setting, rather than looked up key by key, so that
 * an unknown key or group is an error: a typo must not silently leave a default in
 * force. The lists (queues, types) are arrays of groups; each element's fields are
 * described by a small table of the same rows, so they are read and checked by the
 * same code, and their defaults are written in the file's own syntax.
 *
 * Error messages quote no value from the file or the environment (only list element
 * names, which are never secret): a secret must not reach a log line through an
 * error, and file:line already points at the value.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libconfig.h>

#include "cron.h"
#include "decimal.h"
#include "log.h"
#include "redisurl.h"

#define KEY_SECRET 0x1   /* printed redacted, never quoted in an error */
#define KEY_REQUIRED 0x2 /* list element field that must be given */
#define KEY_UNIQUE 0x4   /* list element field whose value must differ between elements */
#define KEY_OPEN_MIN 0x8 /* the value must be more than min, not equal to it */

#define WHY_MAX 256

union val {
    long long i;
    double d;
    const char *s;
    struct cfg_days days;
};

struct cfg_key;

/* How one type of value is read, stored and printed. */
struct ktype {
    const char *what; /* completes "must be ..." */
    int (*from_setting)(const config_setting_t *s, union val *v);
    int (*from_text)(const char *text, union val *v);
    int (*store)(const struct cfg_key *k, void *field, union val v, char *why);
    void (*print)(const struct cfg_key *k, const void *field, FILE *out);
    void (*unset)(void *field);           /* list element field left out of the file */
    int (*is_unset)(const void *field);
};

/* A list of groups, e.g. queues = ( { name = "critical"; weight = 4; }, ... ). */
struct cfg_list {
    const struct cfg_key *fields;
    size_t nfields;
    size_t size;      /* of one element */
    size_t count_off; /* offset of the element count (int) in struct config */
    int min_count;
    const char *what; /* names one element in messages: "queue" */
};

struct cfg_key {
    const char *name;
    const struct ktype *type; /* NULL for a list */
    size_t off;
    const char *def; /* default as text; NULL in a list element: left unset */
    double min, max; /* numbers only */
    const char *env;
    unsigned flags;
    const char *const *choices;                       /* enum: names of 0, 1, ... */
    int (*check)(const char *s, char *why);           /* string: further rules */
    void (*redact)(const char *s, char *buf, size_t size); /* secret: for cfg_print */
    const struct cfg_list *list;
};

/* ---- types ---- */

static int number_setting(const config_setting_t *s, union val *v)
{
    int t = config_setting_type(s);

    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return -1;
    v->i = config_setting_get_int64(s);
    return 0;
}

static int number_text(const char *text, union val *v)
{
    char *end;

    errno = 0;
    v->i = strtoll(text, &end, 10);
    return errno || end == text || *end ? -1 : 0;
}

static int out_of_range(const struct cfg_key *k, double x, char *why)
{
    int low = (k->flags & KEY_OPEN_MIN) ? !(x > k->min) : !(x >= k->min);

    if (!low && x <= k->max)
        return 0;
    if (k->flags & KEY_OPEN_MIN)
        snprintf(why, WHY_MAX, "must be more than %.15g and at most %.15g", k->min, k->max);
    else
        snprintf(why, WHY_MAX, "must be from %.15g to %.15g", k->min, k->max);
    return -1;
}

static int int_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    if (out_of_range(k, (double)v.i, why) < 0)
        return -1;
    *(int *)field = (int)v.i;
    return 0;
}

static void int_print(const struct cfg_key *k, const void *field, FILE *out)
{
    (void)k;
    fprintf(out, "%d", *(const int *)field);
}

static void int_unset(void *field)
{
    *(int *)field = -1;
}

static int int_is_unset(const void *field)
{
    return *(const int *)field < 0;
}

static int long_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    if (out_of_range(k, (double)v.i, why) < 0)
        return -1;
    *(long *)field = (long)v.i;
    return 0;
}

/* libconfig reads a bare integer as 32-bit: a larger one needs the L suffix. */
static void long_print(const struct cfg_key *k, const void *field, FILE *out)
{
    long v = *(const long *)field;

    (void)k;
    fprintf(out, v > INT_MAX || v < INT_MIN ? "%ldL" : "%ld", v);
}

static void long_unset(void *field)
{
    *(long *)field = -1;
}

static int long_is_unset(const void *field)
{
    return *(const long *)field < 0;
}

static int seconds_setting(const config_setting_t *s, union val *v)
{
    if (config_setting_type(s) == CONFIG_TYPE_FLOAT) {
        v->d = config_setting_get_float(s);
        return 0;
    }
    union val n;
    if (number_setting(s, &n) < 0)
        return -1;
    v->d = (double)n.i; /* shutdown_timeout = 25; means 25.0 */
    return 0;
}

static int seconds_text(const char *text, union val *v)
{
    char *end;

    errno = 0;
    v->d = strtod(text, &end);
    return errno || end == text || *end || !isfinite(v->d) ? -1 : 0;
}

static const struct ktype t_seconds;

static int seconds_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    if (out_of_range(k, v.d, why) < 0) {
        if (k->type == &t_seconds)
            strncat(why, " seconds", WHY_MAX - strlen(why) - 1);
        return -1;
    }
    *(double *)field = v.d;
    return 0;
}

/* The shortest %g text that reads back as v; with exp_ok 0, only one without exponent. */
static int shortest(double v, char *buf, size_t size, int exp_ok)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v && (exp_ok || !strchr(buf, 'e')))
            return 0;
    }
    return -1;
}

/* 10.0 rather than 1e+01, and always a '.' or an exponent: libconfig then reads a float. */
static void seconds_print(const struct cfg_key *k, const void *field, FILE *out)
{
    double v = *(const double *)field;
    char buf[64];

    (void)k;
    if (shortest(v, buf, sizeof buf, 0) < 0)
        shortest(v, buf, sizeof buf, 1);
    fputs(buf, out);
    if (!strpbrk(buf, ".e"))
        fputs(".0", out);
}

static void double_unset(void *field)
{
    *(double *)field = -1;
}

static int double_is_unset(const void *field)
{
    return *(const double *)field < 0;
}

static int bool_setting(const config_setting_t *s, union val *v)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return -1;
    v->i = config_setting_get_bool(s);
    return 0;
}

static int bool_text(const char *text, union val *v)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            v->i = strcasecmp(text, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

static int bool_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    (void)k;
    (void)why;
    *(int *)field = v.i != 0;
    return 0;
}

static void bool_print(const struct cfg_key *k, const void *field, FILE *out)
{
    (void)k;
    fputs(*(const int *)field ? "true" : "false", out);
}

/* A list element's bool always has its default, so it is never unset. */
static int never_unset(const void *field)
{
    (void)field;
    return 0;
}

static int string_setting(const config_setting_t *s, union val *v)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return -1;
    v->s = config_setting_get_string(s);
    return 0;
}

static int string_text(const char *text, union val *v)
{
    v->s = text;
    return 0;
}

static int string_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    char **p = field;

    if (k->check && k->check(v.s, why) < 0)
        return -1;
    char *copy = strdup(v.s);
    if (!copy) {
        snprintf(why, WHY_MAX, "out of memory");
        return -1;
    }
    free(*p);
    *p = copy;
    return 0;
}

/* A libconfig string literal: the escapes its scanner reads back. */
static void print_quoted(const char *s, FILE *out)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < ' ' || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void string_print(const struct cfg_key *k, const void *field, FILE *out)
{
    const char *v = *(char *const *)field;
    char red[1024];

    if (v && *v && (k->flags & KEY_SECRET)) {
        if (k->redact)
            k->redact(v, red, sizeof red);
        else
            snprintf(red, sizeof red, "***");
        v = red;
    }
    print_quoted(v ? v : "", out);
}

static void string_unset(void *field)
{
    *(char **)field = NULL;
}

static int string_is_unset(const void *field)
{
    return *(char *const *)field == NULL;
}

static int enum_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    size_t n = 0;

    for (int i = 0; k->choices[i]; i++) {
        if (strcmp(v.s, k->choices[i]) == 0) {
            *(int *)field = i;
            return 0;
        }
    }
    n += (size_t)snprintf(why, WHY_MAX, "must be one of");
    for (int i = 0; k->choices[i] && n < WHY_MAX; i++)
        n += (size_t)snprintf(why + n, WHY_MAX - n, "%s %s", i ? "," : "", k->choices[i]);
    return -1;
}

static void enum_print(const struct cfg_key *k, const void *field, FILE *out)
{
    print_quoted(k->choices[*(const int *)field], out);
}


/* A list of day counts: [3, 7, 14] in the file, "3,7,14" in the environment. */
static int days_setting(const config_setting_t *s, union val *v)
{
    int t = config_setting_type(s), n = config_setting_length(s);

    if ((t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) || n > CFG_MAX_STAGES)
        return -1;
    v->days.n = n;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        if (config_setting_type(e) != CONFIG_TYPE_INT)
            return -1;
        v->days.v[i] = config_setting_get_int(e);
    }
    return 0;
}

static int days_text(const char *text, union val *v)
{
    const char *p = text + strspn(text, "[ ");

    v->days.n = 0;
    while (*p && *p != ']') {
        char *end;
        errno = 0;
        long d = strtol(p, &end, 10);
        if (end == p || errno || d < INT_MIN || d > INT_MAX || v->days.n == CFG_MAX_STAGES)
            return -1;
        v->days.v[v->days.n++] = (int)d;
        p = end + strspn(end, " ");
        if (*p == ',')
            p += 1 + strspn(p + 1, " ");
    }
    return *p == ']' && p[1 + strspn(p + 1, " ")] ? -1 : 0;
}

static int days_store(const struct cfg_key *k, void *field, union val v, char *why)
{
    if (v.days.n == 0) {
        snprintf(why, WHY_MAX, "needs at least one day");
        return -1;
    }
    for (int i = 0; i < v.days.n; i++) {
        if (out_of_range(k, v.days.v[i], why) < 0)
            return -1;
        if (i > 0 && v.days.v[i] <= v.days.v[i - 1]) {
            snprintf(why, WHY_MAX, "days must be strictly increasing");
            return -1;
        }
    }
    *(struct cfg_days *)field = v.days;
    return 0;
}

static void days_print(const struct cfg_key *k, const void *field, FILE *out)
{
    const struct cfg_days *d = field;

    (void)k;
    fputc('[', out);
    for (int i = 0; i < d->n; i++)
        fprintf(out, "%s%d", i ? ", " : "", d->v[i]);
    fputc(']', out);
}

static const struct ktype t_int = {"an integer", number_setting, number_text, int_store,
                                   int_print, int_unset, int_is_unset};
static const struct ktype t_long = {"an integer", number_setting, number_text, long_store,
                                    long_print, long_unset, long_is_unset};
static const struct ktype t_seconds = {"a number of seconds", seconds_setting, seconds_text,
                                       seconds_store, seconds_print, double_unset,
                                       double_is_unset};
static const struct ktype t_number = {"a number", seconds_setting, seconds_text, seconds_store,
                                      seconds_print, double_unset, double_is_unset};
static const struct ktype t_days = {"a list of whole days: [3, 7, 14]", days_setting, days_text,
                                    days_store, days_print, NULL, NULL};
static const struct ktype t_bool = {"true or false", bool_setting, bool_text, bool_store,
                                    bool_print, NULL, never_unset};
static const struct ktype t_string = {"a string", string_setting, string_text, string_store,
                                      string_print, string_unset, string_is_unset};
static const struct ktype t_enum = {"a string", string_setting, string_text, enum_store,
                                    enum_print, NULL, NULL};

/* ---- checks and redaction for particular strings ---- */

static int check_log_level(const char *s, char *why)
{
    if (log_level_parse(s) >= 0)
        return 0;
    snprintf(why, WHY_MAX, "must be one of debug, info, warn, error");
    return -1;
}

/* Key names are built from the prefix, so a space would split a command's argument. */
static int check_prefix(const char *s, char *why)
{
    if (!*s) {
        snprintf(why, WHY_MAX, "must not be empty");
        return -1;
    }
    if (strlen(s) > 100) { /* the engine keeps key names in fixed buffers */
        snprintf(why, WHY_MAX, "must be at most 100 bytes");
        return -1;
    }
    for (; *s; s++) {
        if ((unsigned char)*s <= ' ' || *s == 0x7f) {
            snprintf(why, WHY_MAX, "must not contain spaces or control characters");
            return -1;
        }
    }
    return 0;
}

/* Queue and job type names end up in Redis keys, metrics labels and log fields. */
static int check_name(const char *s, char *why)
{
    if (!*s) {
        snprintf(why, WHY_MAX, "must not be empty");
        return -1;
    }
    if (s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")]) {
        snprintf(why, WHY_MAX, "may hold only letters, digits and _ . : -");
        return -1;
    }
    return 0;
}

/* HOST:PORT, HOST possibly empty or a bracketed IPv6 address; port 0 picks a free one. */
static int check_listen(const char *s, char *why)
{
    const char *colon = strrchr(s, ':');
    char *end;

    if (colon) {
        errno = 0;
        long port = strtol(colon + 1, &end, 10);
        if (colon[1] && isdigit((unsigned char)colon[1]) && !*end && !errno && port >= 0 &&
            port <= 65535)
            return 0;
    }
    snprintf(why, WHY_MAX, "must be HOST:PORT with a port from 0 to 65535");
    return -1;
}

static int check_redis_url(const char *s, char *why)
{
    struct rurl u;

    return rurl_parse(s, &u, why, WHY_MAX);
}

static int is_pg_uri(const char *s)
{
    return strncasecmp(s, "postgresql://", 13) == 0 || strncasecmp(s, "postgres://", 11) == 0;
}

static int check_database_url(const char *s, char *why)
{
    if (!*s || is_pg_uri(s) || strchr(s, '='))
        return 0;
    snprintf(why, WHY_MAX, "must be a libpq URI (postgresql://...) or a conninfo string "
                           "(host=... dbname=...)");
    return -1;
}

struct outbuf {
    char *p;
    size_t size, len;
};

static void put(struct outbuf *o, const char *s, size_t n)
{
    if (n > o->size - 1 - o->len)
        n = o->size - 1 - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* Length of a conninfo value at s: 'quoted with \' escapes' or up to white space. */
static size_t conninfo_value_len(const char *s)
{
    size_t n = 0;

    if (*s != '\'')
        return strcspn(s, " \t\r\n");
    for (n = 1; s[n] && s[n] != '\''; n++)
        if (s[n] == '\\' && s[n + 1])
            n++;
    return s[n] ? n + 1 : n;
}

/*
 * libpq conninfo, "host=db password='a b' dbname=x": the value of every keyword
 * ending in "password" (password, sslpassword) is hidden. From anything that does
 * not parse as keyword=value on, the rest is hidden: it may hold the secret.
 */
static void redact_conninfo(const char *s, struct outbuf *o)
{
    while (*s) {
        size_t sp = strspn(s, " \t\r\n");
        put(o, s, sp);
        s += sp;
        if (!*s)
            break;
        size_t kw = strcspn(s, "= \t\r\n");
        const char *eq = s + kw + strspn(s + kw, " \t\r\n");
        if (kw == 0 || *eq != '=') {
            put(o, "***", 3);
            return;
        }
        const char *val = eq + 1 + strspn(eq + 1, " \t\r\n");
        size_t vlen = conninfo_value_len(val);
        int secret = kw >= 8 && strncmp(s + kw - 8, "password", 8) == 0;
        put(o, s, (size_t)(val - s));
        put(o, secret ? "***" : val, secret ? 3 : vlen);
        s = val + vlen;
    }
}

/* A libpq URI has the userinfo and ?password= of a Redis URL, so rurl_redact serves. */
static void redact_database_url(const char *s, char *buf, size_t size)
{
    struct outbuf o = {buf, size, 0};

    if (is_pg_uri(s)) {
        rurl_redact(s, buf, size);
        return;
    }
    buf[0] = '\0';
    redact_conninfo(s, &o);
}


static int check_decimal(const char *s, char *why)
{
    return dec_check(s, why, WHY_MAX);
}

static int check_cron(const char *s, char *why)
{
    return cron_parse(s, &(struct cron){0}, why, WHY_MAX);
}

static int check_http_url(const char *s, char *why)
{
    if ((strncmp(s, "https://", 8) == 0 && s[8]) || (strncmp(s, "http://", 7) == 0 && s[7]))
        return 0;
    snprintf(why, WHY_MAX, "must be an http:// or https:// URL");
    return -1;
}

/* Header values: a CR or LF would let a value start a header of its own. */
static int check_header_value(const char *s, char *why)
{
    if (!strpbrk(s, "\r\n"))
        return 0;
    snprintf(why, WHY_MAX, "must not contain a line break");
    return -1;
}

static int check_address(const char *s, char *why)
{
    if (check_header_value(s, why) < 0)
        return -1;
    if (strchr(s, '@'))
        return 0;
    snprintf(why, WHY_MAX, "must be an email address: addr@domain or Name <addr@domain>");
    return -1;
}

static int check_json_object(const char *s, char *why)
{
    s += strspn(s, " \t\n");
    if (*s == '{')
        return 0;
    snprintf(why, WHY_MAX, "must be a JSON object: \"{ ... }\"");
    return -1;
}

/* ---- the table ---- */

static const char *const fetch_orders[] = {"strict", "weighted", NULL};
static const char *const mail_transports[] = {"auto", "sendgrid", "smtp", "log", NULL};
static const char *const starttls_modes[] = {"required", "optional", "off", NULL};

_Static_assert(sizeof(enum cfg_order) == sizeof(int), "enum keys are stored as int");

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD(n, t, st, f) .name = (n), .type = &(t), .off = offsetof(struct st, f)
#define KEY(n, t, f) FIELD(n, t, config, f)

static const struct cfg_key queue_fields[] = {
    {FIELD("name", t_string, cfg_queue, name), .flags = KEY_REQUIRED | KEY_UNIQUE,
     .check = check_name},
    {FIELD("weight", t_int, cfg_queue, weight), .def = "1", .min = 1, .max = 1000},
};

static const struct cfg_key type_fields[] = {
    {FIELD("name", t_string, cfg_type, name), .flags = KEY_REQUIRED | KEY_UNIQUE,
     .check = check_name},
    {FIELD("queue", t_string, cfg_type, queue), .check = check_name},
    {FIELD("max_attempts", t_int, cfg_type, max_attempts), .min = 1, .max = 1000},
    {FIELD("timeout", t_seconds, cfg_type, timeout), .min = 0, .max = 86400,
     .flags = KEY_OPEN_MIN},
    {FIELD("backoff_base", t_seconds, cfg_type, backoff_base), .min = 0, .max = 31536000},
    {FIELD("backoff_factor", t_seconds, cfg_type, backoff_factor), .min = 0, .max = 31536000},
    {FIELD("backoff_cap", t_seconds, cfg_type, backoff_cap), .min = 0, .max = 31536000,
     .flags = KEY_OPEN_MIN},
};

static const struct cfg_key schedule_fields[] = {
    {FIELD("name", t_string, cfg_schedule, name), .flags = KEY_REQUIRED | KEY_UNIQUE,
     .check = check_name},
    {FIELD("cron", t_string, cfg_schedule, cron), .flags = KEY_REQUIRED, .check = check_cron},
    {FIELD("type", t_string, cfg_schedule, type), .flags = KEY_REQUIRED, .check = check_name},
    {FIELD("args", t_string, cfg_schedule, args), .def = "{}", .check = check_json_object},
    {FIELD("queue", t_string, cfg_schedule, queue), .check = check_name},
    {FIELD("catch_up", t_bool, cfg_schedule, catch_up), .def = "false"},
};

static const struct cfg_list queue_list = {
    queue_fields, NELEM(queue_fields), sizeof(struct cfg_queue), offsetof(struct config, nqueues),
    1, "queue"};
static const struct cfg_list type_list = {
    type_fields, NELEM(type_fields), sizeof(struct cfg_type), offsetof(struct config, ntypes), 0,
    "type"};
static const struct cfg_list schedule_list = {
    schedule_fields, NELEM(schedule_fields), sizeof(struct cfg_schedule),
    offsetof(struct config, nschedule), 0, "schedule entry"};

/*
 * Keys of one group must be contiguous here: cfg_print() prints them in table order.
 * workers = 0 means one per CPU (resolved after loading, see resolve_workers()).
 */
static const struct cfg_key keys[] = {
    {KEY("workers", t_int, workers), .def = "0", .min = 0, .max = 256},
    {KEY("concurrency", t_int, concurrency), .def = "32", .min = 1, .max = 10000},
    {KEY("debug_jobs", t_bool, debug_jobs), .def = "false"},
    {KEY("shutdown_timeout", t_seconds, shutdown_timeout), .def = "25.0", .min = 0, .max = 3600},
    {KEY("max_job_bytes", t_long, max_job_bytes), .def = "262144", .min = 64, .max = 67108864},
    {KEY("poison_limit", t_int, poison_limit), .def = "3", .min = 1, .max = 1000},
    {KEY("log_level", t_string, log_level), .def = "info", .check = check_log_level},
    {KEY("redis.url", t_string, redis_url), .def = "redis://127.0.0.1:6379/0", .env = "REDIS_URL",
     .flags = KEY_SECRET, .check = check_redis_url, .redact = rurl_redact},
    {KEY("redis.prefix", t_string, redis_prefix), .def = "steller", .check = check_prefix},
    {KEY("redis.allow_eviction", t_bool, redis_allow_eviction), .def = "false"},
    {KEY("database.url", t_string, database_url), .def = "", .env = "DATABASE_URL",
     .flags = KEY_SECRET, .check = check_database_url, .redact = redact_database_url},
    {KEY("database.pool_size", t_int, database_pool_size), .def = "2", .min = 1, .max = 64},
    {KEY("database.statement_timeout", t_seconds, database_statement_timeout), .def = "60.0",
     .min = 0, .max = 86400, .flags = KEY_OPEN_MIN},
    {KEY("http.listen", t_string, http_listen), .def = "127.0.0.1:9460", .check = check_listen},
    {KEY("dead.max_entries", t_long, dead_max_entries), .def = "100000", .min = 1,
     .max = 100000000},
    {KEY("request_log.batch_max", t_int, request_log_batch_max), .def = "1000", .min = 1,
     .max = 100000},
    {KEY("request_log.batch_wait_ms", t_int, request_log_batch_wait_ms), .def = "50", .min = 0,
     .max = 60000},
    {KEY("fetch.order", t_enum, fetch_order), .def = "strict", .choices = fetch_orders},
    {KEY("fetch.idle_ms", t_int, fetch_idle_ms), .def = "100", .min = 1, .max = 10000},
    {KEY("engine.heartbeat_interval", t_seconds, heartbeat_interval), .def = "2.0", .min = 0,
     .max = 3600, .flags = KEY_OPEN_MIN},
    {KEY("engine.heartbeat_ttl", t_seconds, heartbeat_ttl), .def = "10.0", .min = 0,
     .max = 86400, .flags = KEY_OPEN_MIN},
    {KEY("engine.promote_interval", t_seconds, promote_interval), .def = "1.0", .min = 0,
     .max = 3600, .flags = KEY_OPEN_MIN},
    {KEY("engine.reaper_interval", t_seconds, reaper_interval), .def = "5.0", .min = 0,
     .max = 3600, .flags = KEY_OPEN_MIN},
    {KEY("email.transport", t_enum, email_transport), .def = "auto", .choices = mail_transports},
    {KEY("email.from", t_string, email_from), .def = "Steller <no-reply@steller.io>",
     .env = "EMAIL_FROM", .check = check_address},
    {KEY("email.support_address", t_string, email_support_address),
     .def = "support@steller.io", .check = check_address},
    {KEY("email.activation_url", t_string, email_activation_url),
     .def = "https://app.steller.io/activate?token=", .check = check_http_url},
    {KEY("email.templates", t_string, email_templates), .def = ""},
    {KEY("email.timeout", t_seconds, email_timeout), .def = "30.0", .min = 0, .max = 3600,
     .flags = KEY_OPEN_MIN},
    {KEY("email.rate_per_second", t_number, email_rate_per_second), .def = "0.0", .min = 0,
     .max = 1000000},
    {KEY("email.breaker_failures", t_int, email_breaker_failures), .def = "20", .min = 1,
     .max = 100000},
    {KEY("email.breaker_cooloff", t_seconds, email_breaker_cooloff), .def = "30.0", .min = 0,
     .max = 86400, .flags = KEY_OPEN_MIN},
    {KEY("email.sendgrid.base_url", t_string, email_sendgrid_base_url),
     .def = "https://api.sendgrid.com", .check = check_http_url},
    {KEY("email.sendgrid.api_key", t_string, email_sendgrid_api_key), .def = "",
     .env = "SENDGRID_API_KEY", .flags = KEY_SECRET, .check = check_header_value},
    {KEY("email.smtp.server", t_string, email_smtp_server), .def = "",
     .env = "EMAIL_SMTP_SERVER"},
    {KEY("email.smtp.port", t_int, email_smtp_port), .def = "587", .env = "EMAIL_SMTP_PORT",
     .min = 1, .max = 65535},
    {KEY("email.smtp.user", t_string, email_smtp_user), .def = "", .env = "EMAIL_SMTP_USER"},
    {KEY("email.smtp.password", t_string, email_smtp_password), .def = "",
     .env = "EMAIL_SMTP_PASSWORD", .flags = KEY_SECRET},
    {KEY("email.smtp.starttls", t_enum, email_smtp_starttls), .def = "required",
     .choices = starttls_modes},
    {KEY("email.smtp.ca_file", t_string, email_smtp_ca_file), .def = ""},
    {KEY("wallet.default_seed_amount", t_string, wallet_default_seed_amount), .def = "1000.00",
     .check = check_decimal},
    {KEY("wallet.max_seed_amount", t_string, wallet_max_seed_amount), .def = "1000000.00",
     .check = check_decimal},
    {KEY("reengagement.stages", t_days, reengagement_stages), .def = "3,7,14", .min = 1,
     .max = 3650},
    {KEY("reengagement.quiet_days", t_int, reengagement_quiet_days), .def = "7", .min = 0,
     .max = 3650},
    {KEY("reengagement.max_age_days", t_int, reengagement_max_age_days), .def = "30", .min = 1,
     .max = 36500},
    {KEY("reengagement.batch_size", t_int, reengagement_batch_size), .def = "1000", .min = 1,
     .max = 100000},
    {KEY("reengagement.parallel", t_int, reengagement_parallel), .def = "2", .min = 1,
     .max = CFG_MAX_SWEEP_LANES},
    {.name = "queues", .off = offsetof(struct config, queues), .list = &queue_list,
     .def = "( { name = \"critical\"; weight = 4; }, { name = \"default\"; weight = 2; },"
            "  { name = \"email\"; weight = 2; }, { name = \"request_log\"; weight = 1; } )"},
    {.name = "types", .off = offsetof(struct config, types), .list = &type_list, .def = "( )"},
    {.name = "schedule", .off = offsetof(struct config, schedule), .list = &schedule_list,
     .def = "( { name = \"reengagement\"; cron = \"0 9 * * *\"; "
            "type = \"reengagement.sweep\"; } )"},
};

#define NKEYS NELEM(keys)

/* ---- loading ---- */

/* Where a top-level key got its value, for checks that span keys. */
struct origin {
    const char *file; /* NULL: the default, or the environment if env is set */
    const char *env;
    int line;
};

struct loader {
    config_t cf;
    const char *file; /* the file being read, for errors */
    char *err;
    size_t errlen;
    struct origin origin[NKEYS];
};

/* The keys one group of settings may hold, and where their values go. */
struct scope {
    const struct cfg_key *keys;
    size_t n;
    void *base;             /* the struct the offsets point into */
    struct origin *origin;  /* per key, or NULL */
    char shown[64];         /* prefix of key names in errors: "", "queues[2]." */
};

static int errorf(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int errorf(struct loader *ld, const char *fmt, ...)
{
    va_list ap;

    if (ld->errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(ld->err, ld->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *source_file(const struct loader *ld, const config_setting_t *s)
{
    const char *f = config_setting_source_file(s);

    return f ? f : ld->file;
}

static void *field_of(const struct scope *sc, const struct cfg_key *k)
{
    return (char *)sc->base + k->off;
}

static const struct cfg_key *find_key(const struct scope *sc, const char *name)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->keys[i].name, name) == 0)
            return &sc->keys[i];
    return NULL;
}

/* Whether some key lives in group name ("redis" for "redis.url"). */
static int is_group(const struct scope *sc, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < sc->n; i++)
        if (strncmp(sc->keys[i].name, name, len) == 0 && sc->keys[i].name[len] == '.')
            return 1;
    return 0;
}

static int load_list(struct loader *ld, const struct scope *sc, const struct cfg_key *k,
                     const config_setting_t *s);
static int load_group(struct loader *ld, const struct scope *sc, const config_setting_t *g,
                      const char *prefix);

static int load_key(struct loader *ld, const struct scope *sc, const struct cfg_key *k,
                    const config_setting_t *s)
{
    char why[WHY_MAX] = "";
    union val v;

    if (k->list) {
        if (load_list(ld, sc, k, s) < 0)
            return -1;
    } else if (k->type->from_setting(s, &v) < 0) {
        return errorf(ld, "%s:%d: key '%s%s': must be %s", source_file(ld, s),
                      config_setting_source_line(s), sc->shown, k->name, k->type->what);
    } else if (k->type->store(k, field_of(sc, k), v, why) < 0) {
        return errorf(ld, "%s:%d: key '%s%s': %s", source_file(ld, s),
                      config_setting_source_line(s), sc->shown, k->name, why);
    }
    if (sc->origin)
        sc->origin[k - sc->keys] = (struct origin){source_file(ld, s), NULL,
                                                   config_setting_source_line(s)};
    return 0;
}

static int load_member(struct loader *ld, const struct scope *sc, const config_setting_t *m,
                       const char *prefix)
{
    char name[128];
    const struct cfg_key *k;

    snprintf(name, sizeof name, "%s%s", prefix, config_setting_name(m));
    k = find_key(sc, name);
    if (k)
        return load_key(ld, sc, k, m);
    if (!is_group(sc, name))
        return errorf(ld, "%s:%d: unknown key '%s%s'", source_file(ld, m),
                      config_setting_source_line(m), sc->shown, name);
    if (config_setting_type(m) != CONFIG_TYPE_GROUP)
        return errorf(ld, "%s:%d: key '%s%s': must be a group: %s = { ... };",
                      source_file(ld, m), config_setting_source_line(m), sc->shown, name,
                      config_setting_name(m));
    strncat(name, ".", sizeof name - strlen(name) - 1);
    return load_group(ld, sc, m, name);
}

static int load_group(struct loader *ld, const struct scope *sc, const config_setting_t *g,
                      const char *prefix)
{
    for (int i = 0; i < config_setting_length(g); i++)
        if (load_member(ld, sc, config_setting_get_elem(g, i), prefix) < 0)
            return -1;
    return 0;
}

/* Defaults of every key of a scope; a list element's keys without one are unset. */
static int apply_default(struct loader *ld, const struct scope *sc, const struct cfg_key *k);

static int apply_defaults(struct loader *ld, const struct scope *sc)
{
    for (size_t i = 0; i < sc->n; i++)
        if (apply_default(ld, sc, &sc->keys[i]) < 0)
            return -1;
    return 0;
}

static void free_elements(const struct cfg_list *l, char *arr, int n)
{
    for (int i = 0; i < n; i++) {
        for (size_t f = 0; f < l->nfields; f++) {
            if (l->fields[f].type == &t_string) {
                char **p = (char **)(arr + (size_t)i * l->size + l->fields[f].off);
                free(*p);
            }
        }
    }
    free(arr);
}

static int check_element(struct loader *ld, const struct scope *sc, const struct cfg_list *l,
                         const config_setting_t *e, char *arr, int i)
{
    for (size_t f = 0; f < l->nfields; f++) {
        const struct cfg_key *k = &l->fields[f];
        if ((k->flags & KEY_REQUIRED) && k->type->is_unset(field_of(sc, k)))
            return errorf(ld, "%s:%d: key '%.*s': %s is required", source_file(ld, e),
                          config_setting_source_line(e), (int)strlen(sc->shown) - 1, sc->shown,
                          k->name);
        if (!(k->flags & KEY_UNIQUE))
            continue;
        const char *v = *(char **)field_of(sc, k);
        for (int j = 0; j < i; j++)
            if (strcmp(*(char **)(arr + (size_t)j * l->size + k->off), v) == 0)
                return errorf(ld, "%s:%d: key '%s%s': a second %s named '%s'",
                              source_file(ld, e), config_setting_source_line(e), sc->shown,
                              k->name, l->what, v);
    }
    return 0;
}

static int load_element(struct loader *ld, const struct cfg_key *k, const config_setting_t *e,
                        char *arr, int i)
{
    const struct cfg_list *l = k->list;
    struct scope sc = {l->fields, l->nfields, arr + (size_t)i * l->size, NULL, ""};

    snprintf(sc.shown, sizeof sc.shown, "%s[%d].", k->name, i);
    if (apply_defaults(ld, &sc) < 0)
        return -1;
    if (config_setting_type(e) != CONFIG_TYPE_GROUP)
        return errorf(ld, "%s:%d: key '%s[%d]': must be a group: { name = ...; }",
                      source_file(ld, e), config_setting_source_line(e), k->name, i);
    if (load_group(ld, &sc, e, "") < 0)
        return -1;
    return check_element(ld, &sc, l, e, arr, i);
}

/* Reads the whole list into a new array and only then replaces the old one. */
static int load_list(struct loader *ld, const struct scope *sc, const struct cfg_key *k,
                     const config_setting_t *s)
{
    const struct cfg_list *l = k->list;
    int t = config_setting_type(s), n = config_setting_length(s);

    if (t != CONFIG_TYPE_LIST && t != CONFIG_TYPE_ARRAY)
        return errorf(ld, "%s:%d: key '%s': must be a list of groups: ( { name = ...; }, ... )",
                      source_file(ld, s), config_setting_source_line(s), k->name);
    if (n < l->min_count)
        return errorf(ld, "%s:%d: key '%s': needs at least %d %s", source_file(ld, s),
                      config_setting_source_line(s), k->name, l->min_count, l->what);
    char *arr = calloc(n > 0 ? (size_t)n : 1, l->size);
    if (!arr)
        return errorf(ld, "%s: out of memory", ld->file);
    for (int i = 0; i < n; i++) {
        if (load_element(ld, k, config_setting_get_elem(s, i), arr, i) < 0) {
            free_elements(l, arr, i + 1);
            return -1;
        }
    }
    char **slot = field_of(sc, k);
    int *count = (int *)((char *)sc->base + l->count_off);
    free_elements(l, *slot, *count);
    *slot = arr;
    *count = n;
    return 0;
}

/* A list's default is written in the file's syntax and read like the file. */
static int list_default(struct loader *ld, const struct scope *sc, const struct cfg_key *k)
{
    char text[1024];
    config_t cf;
    const char *file = ld->file;
    int rc = -1;

    snprintf(text, sizeof text, "%s = %s;", k->name, k->def);
    config_init(&cf);
    ld->file = "(default)";
    if (config_read_string(&cf, text) == CONFIG_TRUE)
        rc = load_list(ld, sc, k, config_lookup(&cf, k->name));
    else
        errorf(ld, "default of key '%s': %s", k->name, config_error_text(&cf));
    ld->file = file;
    config_destroy(&cf);
    return rc;
}

static int apply_default(struct loader *ld, const struct scope *sc, const struct cfg_key *k)
{
    char why[WHY_MAX] = "";
    union val v;

    if (k->list)
        return list_default(ld, sc, k);
    if (!k->def) {
        k->type->unset(field_of(sc, k));
        return 0;
    }
    if (k->type->from_text(k->def, &v) < 0)
        return errorf(ld, "default of key '%s': must be %s", k->name, k->type->what);
    if (k->type->store(k, field_of(sc, k), v, why) < 0)
        return errorf(ld, "default of key '%s': %s", k->name, why);
    return 0;
}

static int load_file(struct loader *ld, struct config *c, const struct scope *sc,
                     const char *path)
{
    FILE *f = fopen(path, "r");

    /* libconfig reports an unreadable file as "file I/O error": errno says more. */
    if (!f)
        return errorf(ld, "%s: cannot read: %s", path, strerror(errno));
    fclose(f);
    c->path = strdup(path);
    if (!c->path)
        return errorf(ld, "%s: out of memory", path);
    ld->file = path;
    if (config_read_file(&ld->cf, path) != CONFIG_TRUE)
        return errorf(ld, "%s:%d: %s",
                      config_error_file(&ld->cf) ? config_error_file(&ld->cf) : path,
                      config_error_line(&ld->cf), config_error_text(&ld->cf));
    return load_group(ld, sc, config_root_setting(&ld->cf), "");
}

/* An empty variable counts as unset, as an empty line in the API's .env does. */
static int apply_env(struct loader *ld, const struct scope *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        const struct cfg_key *k = &sc->keys[i];
        const char *text = k->env ? getenv(k->env) : NULL;
        char why[WHY_MAX] = "";
        union val v;
        if (!text || !*text)
            continue;
        if (k->type->from_text(text, &v) < 0)
            return errorf(ld, "environment %s: must be %s", k->env, k->type->what);
        if (k->type->store(k, field_of(sc, k), v, why) < 0)
            return errorf(ld, "environment %s: %s", k->env, why);
        sc->origin[i] = (struct origin){NULL, k->env, 0};
    }
    return 0;
}

/* Beyond 256 CPUs one worker per CPU is more than one Redis can serve anyway. */
static void resolve_workers(struct config *c)
{
    long n;

    if (c->workers != 0)
        return;
    n = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static size_t key_index(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return i;
    return NKEYS;
}

/* "FILE:LINE: key 'x'" for where key i got its value. */
static void where(const struct loader *ld, size_t i, char *buf, size_t size)
{
    const struct origin *o = &ld->origin[i];

    if (o->file)
        snprintf(buf, size, "%s:%d: key '%s'", o->file, o->line, keys[i].name);
    else if (o->env)
        snprintf(buf, size, "environment %s", o->env);
    else
        snprintf(buf, size, "default of key '%s'", keys[i].name);
}

/*
 * A worker's heartbeat key must outlive at least two missed beats, or a busy
 * worker is reaped and its jobs run twice. The error points at whichever of the
 * two the file set, the ttl first.
 */
static int check_heartbeat(const struct loader *ld, const struct config *c, char *err,
                           size_t errlen)
{
    size_t ttl = key_index("engine.heartbeat_ttl"), iv = key_index("engine.heartbeat_interval");
    char at[512];

    if (c->heartbeat_ttl > 2 * c->heartbeat_interval)
        return 0;
    if (ld->origin[ttl].file || !ld->origin[iv].file) {
        where(ld, ttl, at, sizeof at);
        snprintf(err, errlen, "%s: must be more than twice engine.heartbeat_interval", at);
    } else {
        where(ld, iv, at, sizeof at);
        snprintf(err, errlen, "%s: must be less than half engine.heartbeat_ttl", at);
    }
    return -1;
}

/* SPEC §5: SendGrid when its key is set, else SMTP when a server is, else the log. */
static int resolve_transport(const struct loader *ld, struct config *c, char *err, size_t errlen)
{
    size_t k = key_index("email.transport");
    char at[512];

    if (c->email_transport == CFG_MAIL_AUTO)
        c->email_transport = *c->email_sendgrid_api_key ? CFG_MAIL_SENDGRID
                             : *c->email_smtp_server    ? CFG_MAIL_SMTP
                                                        : CFG_MAIL_LOG;
    where(ld, k, at, sizeof at);
    if (c->email_transport == CFG_MAIL_SENDGRID && !*c->email_sendgrid_api_key) {
        snprintf(err, errlen, "%s: sendgrid needs SENDGRID_API_KEY", at);
        return -1;
    }
    if (c->email_transport == CFG_MAIL_SMTP && !*c->email_smtp_server) {
        snprintf(err, errlen, "%s: smtp needs EMAIL_SMTP_SERVER", at);
        return -1;
    }
    return 0;
}

static int check_amounts(const struct loader *ld, const struct config *c, char *err,
                         size_t errlen)
{
    char at[512];

    if (dec_cmp(c->wallet_default_seed_amount, c->wallet_max_seed_amount) <= 0)
        return 0;
    where(ld, key_index("wallet.default_seed_amount"), at, sizeof at);
    snprintf(err, errlen, "%s: must not be more than wallet.max_seed_amount", at);
    return -1;
}

static int check_stages(const struct loader *ld, const struct config *c, char *err,
                        size_t errlen)
{
    const struct cfg_days *d = &c->reengagement_stages;
    char at[512];

    if (c->reengagement_max_age_days > d->v[d->n - 1])
        return 0;
    where(ld, key_index("reengagement.max_age_days"), at, sizeof at);
    snprintf(err, errlen, "%s: must be more than the last of reengagement.stages", at);
    return -1;
}

int cfg_load(struct config *c, const char *path, char *err, size_t errlen)
{
    struct loader ld = {.file = "(default)", .err = err, .errlen = errlen};
    struct scope sc = {keys, NKEYS, c, ld.origin, ""};
    int rc;

    memset(c, 0, sizeof *c);
    if (errlen > 0)
        err[0] = '\0';
    config_init(&ld.cf);
    rc = apply_defaults(&ld, &sc);
    if (rc == 0 && path)
        rc = load_file(&ld, c, &sc, path);
    if (rc == 0)
        rc = apply_env(&ld, &sc);
    if (rc == 0) {
        resolve_workers(c);
        rc = check_heartbeat(&ld, c, err, errlen);
    }
    if (rc == 0)
        rc = resolve_transport(&ld, c, err, errlen);
    if (rc == 0)
        rc = check_amounts(&ld, c, err, errlen);
    if (rc == 0)
        rc = check_stages(&ld, c, err, errlen);
    config_destroy(&ld.cf);
    if (rc < 0)
        cfg_free(c);
    return rc;
}

void cfg_free(struct config *c)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        char **p = (char **)((char *)c + k->off);
        if (k->list)
            free_elements(k->list, *p, *(int *)((char *)c + k->list->count_off));
        else if (k->type == &t_string)
            free(*p);
    }
    free(c->path);
    memset(c, 0, sizeof *c);
}

/* ---- printing ---- */

static void print_element(const struct cfg_list *l, const char *el, FILE *out)
{
    fputs("    {", out);
    for (size_t f = 0; f < l->nfields; f++) {
        const struct cfg_key *k = &l->fields[f];
        if (k->type->is_unset(el + k->off))
            continue;
        fprintf(out, " %s = ", k->name);
        k->type->print(k, el + k->off, out);
        fputc(';', out);
    }
    fputs(" }", out);
}

static void print_list(const struct cfg_key *k, const struct config *c, FILE *out)
{
    const char *arr = *(char *const *)((const char *)c + k->off);
    int n = *(const int *)((const char *)c + k->list->count_off);

    fprintf(out, "%s = (%s", k->name, n ? "\n" : " ");
    for (int i = 0; i < n; i++) {
        print_element(k->list, arr + (size_t)i * k->list->size, out);
        fputs(i + 1 < n ? ",\n" : "\n", out);
    }
    fputs(");\n", out);
}

static void print_key(const struct cfg_key *k, const struct config *c, int depth, FILE *out)
{
    const char *dot = strrchr(k->name, '.');

    if (k->list) {
        print_list(k, c, out);
        return;
    }
    fprintf(out, "%*s%s = ", depth * 4, "", dot ? dot + 1 : k->name);
    k->type->print(k, (const char *)c + k->off, out);
    fputs(";\n", out);
}

/*
 * Prints keys[i...] while their names start with prefix (plen bytes, "" or
 * "email." or "email.smtp."), each group once: the keys of a group, and of each
 * group inside it, are contiguous in keys[]. Returns the first index past them.
 */
static size_t print_keys(const struct config *c, size_t i, const char *prefix, size_t plen,
                         int depth, FILE *out)
{
    while (i < NKEYS && strncmp(keys[i].name, prefix, plen) == 0) {
        const char *rest = keys[i].name + plen, *dot = strchr(rest, '.');
        if (!dot) {
            print_key(&keys[i], c, depth, out);
            i++;
            continue;
        }
        fprintf(out, "%*s%.*s = {\n", depth * 4, "", (int)(dot - rest), rest);
        i = print_keys(c, i, keys[i].name, (size_t)(dot + 1 - keys[i].name), depth + 1, out);
        fprintf(out, "%*s};\n", depth * 4, "");
    }
    return i;
}

void cfg_print(const struct config *c, FILE *out)
{
    fputs("# steller-worker: effective configuration, secrets redacted\n", out);
    print_keys(c, 0, "", 0, 0, out);
}

const char *cfg_mail_transport_name(enum cfg_mail_transport t)
{
    return mail_transports[t];
}

const struct cfg_type *cfg_find_type(const struct config *c, const char *name)
{
    for (int i = 0; i < c->ntypes; i++)
        if (strcmp(c->types[i].name, name) == 0)
            return &c->types[i];
    return NULL;
}
