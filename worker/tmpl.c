/*
 * tmpl.c - the email templates: load a directory, check it, render a kind.
 *
 * Loading reads the nine files (three kinds, three parts each) and parses every
 * one into a list of segments: literal text (with `{{` and `}}` already turned
 * into single braces) or a placeholder, resolved at load to an index into its
 * kind's table. A name the kind does not define, an unterminated `{`, a file
 * that is missing, too big, empty, not UTF-8, or a subject of more than one line
 * fails the whole load with FILE:LINE, so the master refuses it at start and on
 * SIGHUP exactly like a bad config, and a worker never meets a broken template.
 *
 * Rendering only walks the segments: no parsing, no lookup by name per segment.
 * Values are copied raw into the subject and the text, HTML-escaped into the
 * html. A subject is a mail header, so a value holding CR or LF there is refused
 * rather than stripped: it is bad input, and the caller dead-letters the job.
 */
#include "tmpl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sbuf.h"

#ifndef STELLER_TEMPLATES_DIR
#error "STELLER_TEMPLATES_DIR must be defined (CMakeLists.txt sets it)"
#endif

enum tmpl_part { PART_SUBJECT = 0, PART_TEXT, PART_HTML, NPARTS };

static const char *const part_ext[NPARTS] = {"subject", "txt", "html"};

static const char *const kind_names[TMPL_NKINDS] = {"welcome", "activation", "reengagement"};

/* The placeholders of each kind. The common four come first in every table. */
static const char *const ph_welcome[] = {"business_name", "email", "support_address", "partner_id",
                                         NULL};
static const char *const ph_activation[] = {"business_name", "email",          "support_address",
                                            "partner_id",    "activation_url", NULL};
static const char *const ph_reengagement[] = {"business_name", "email", "support_address",
                                              "partner_id",    "stage", NULL};
static const char *const *const kind_ph[TMPL_NKINDS] = {ph_welcome, ph_activation, ph_reengagement};

#define TMPL_MAX_VARS 8   /* more than any kind's table holds */
#define TMPL_SHOW_NAME 64 /* an unknown name is cut to this in the message */

struct seg {
    int var;         /* -1: literal; else the index in the kind's placeholder table */
    size_t off, len; /* literal: the bytes of part.lit */
};

struct part {
    char *lit; /* all literal text of the file, braces unescaped */
    struct seg *segs;
    size_t nsegs, cap;
};

struct tmpl_set {
    struct part parts[TMPL_NKINDS][NPARTS];
};

const char *tmpl_kind_name(enum tmpl_kind k)
{
    return (unsigned)k < TMPL_NKINDS ? kind_names[k] : NULL;
}

const char *const *tmpl_placeholders(enum tmpl_kind k)
{
    return (unsigned)k < TMPL_NKINDS ? kind_ph[k] : NULL;
}

/* ------------------------------------------------------------------ loading */

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0, cap;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT)
            snprintf(err, errlen, "%s: missing file", path);
        else
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    /* The size is checked again while reading: the file may grow meanwhile. */
    cap = st.st_size > TMPL_MAX_FILE ? TMPL_MAX_FILE + 1 : (size_t)st.st_size + 1;
    if (!(buf = malloc(cap + 1))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > TMPL_MAX_FILE) {
            snprintf(err, errlen, "%s: larger than %d bytes", path, TMPL_MAX_FILE);
            goto fail;
        }
        if (n == cap) { /* grew since fstat: make room, the limit still holds */
            char *more;
            cap = cap * 2 > TMPL_MAX_FILE + 1 ? TMPL_MAX_FILE + 1 : cap * 2;
            if (!(more = realloc(buf, cap + 1))) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = more;
        }
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

static size_t line_at(const char *s, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off; i++)
        line += s[i] == '\n';
    return line;
}

/* The offset of the first byte that is not part of well-formed UTF-8 (or is NUL),
 * or n. Overlong forms, surrogates and code points past U+10FFFF are refused. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t more;
        unsigned lo = 0x80, hi = 0xbf;
        if (c == 0)
            return i;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            more = 1;
        else if (c >= 0xe0 && c <= 0xef)
            more = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c >= 0xf0 && c <= 0xf4)
            more = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        else
            return i;
        if (i + more >= n)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t j = 2; j <= more; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return i;
        i += more + 1;
    }
    return n;
}

static int find_ph(enum tmpl_kind k, const char *name, size_t len)
{
    for (int i = 0; kind_ph[k][i]; i++)
        if (strlen(kind_ph[k][i]) == len && memcmp(kind_ph[k][i], name, len) == 0)
            return i;
    return -1;
}

static void list_ph(enum tmpl_kind k, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; kind_ph[k][i] && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s{%s}", i ? " " : "", kind_ph[k][i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static int push_seg(struct part *p, int var, size_t off, size_t len)
{
    if (var < 0 && len == 0)
        return 0;
    if (p->nsegs == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct seg *s = realloc(p->segs, cap * sizeof(*s));
        if (!s)
            return -1;
        p->segs = s;
        p->cap = cap;
    }
    p->segs[p->nsegs++] = (struct seg){var, off, len};
    return 0;
}

/* src[i] is '{' (not "{{"). Returns the index of its '}', or 0 when unterminated on
 * its line. */
static size_t ph_end(const char *src, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++) {
        if (src[j] == '}')
            return j;
        if (src[j] == '{' || src[j] == '\n')
            return 0;
    }
    return 0;
}

static int parse(struct part *p, const char *src, size_t n, enum tmpl_kind k, const char *path,
                 char *err, size_t errlen)
{
    size_t i = 0, litlen = 0, seg_start = 0;

    if (!(p->lit = malloc(n + 1)))
        goto oom;
    while (i < n) {
        size_t end, len;
        int var;
        if ((src[i] == '{' || src[i] == '}') && i + 1 < n && src[i + 1] == src[i]) {
            p->lit[litlen++] = src[i];
            i += 2;
            continue;
        }
        if (src[i] != '{') {
            p->lit[litlen++] = src[i++];
            continue;
        }
        if (!(end = ph_end(src, n, i))) {
            snprintf(err, errlen, "%s:%zu: unterminated { (write {{ for a literal brace)", path,
                     line_at(src, i));
            return -1;
        }
        len = end - i - 1;
        if ((var = find_ph(k, src + i + 1, len)) < 0) {
            char have[160];
            list_ph(k, have, sizeof(have));
            snprintf(err, errlen, "%s:%zu: unknown placeholder {%.*s}; %s has %s", path,
                     line_at(src, i), (int)(len > TMPL_SHOW_NAME ? TMPL_SHOW_NAME : len),
                     src + i + 1, kind_names[k], have);
            return -1;
        }
        if (push_seg(p, -1, seg_start, litlen - seg_start) != 0 || push_seg(p, var, 0, 0) != 0)
            goto oom;
        seg_start = litlen;
        i = end + 1;
    }
    if (push_seg(p, -1, seg_start, litlen - seg_start) != 0)
        goto oom;
    p->lit[litlen] = '\0';
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
}

/* A subject is one header line: its file may end with one newline, no more. */
static int subject_line(char *src, size_t *n, const char *path, char *err, size_t errlen)
{
    size_t cut;
    if (*n && src[*n - 1] == '\n')
        src[--*n] = '\0';
    if (*n && src[*n - 1] == '\r')
        src[--*n] = '\0';
    cut = strcspn(src, "\r\n");
    if (cut < *n) {
        snprintf(err, errlen, "%s:%zu: the subject must be one line", path,
                 line_at(src, cut) + (src[cut] == '\n'));
        return -1;
    }
    return 0;
}

static int load_part(struct part *p, const char *dir, enum tmpl_kind k, enum tmpl_part part,
                     char *err, size_t errlen)
{
    char path[PATH_MAX];
    size_t n = 0, bad;
    char *src;
    int rc = -1;

    if (snprintf(path, sizeof(path), "%s/%s.%s", dir, kind_names[k], part_ext[part]) >=
        (int)sizeof(path)) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    if (!(src = read_file(path, &n, err, errlen)))
        return -1;
    if ((bad = utf8_bad((const unsigned char *)src, n)) < n)
        snprintf(err, errlen, "%s:%zu: %s", path, line_at(src, bad),
                 src[bad] ? "not UTF-8" : "NUL byte");
    else if (part == PART_SUBJECT && subject_line(src, &n, path, err, errlen) != 0)
        ;
    else if (strspn(src, " \t\r\n") == n)
        snprintf(err, errlen, "%s: empty", path);
    else
        rc = parse(p, src, n, k, path, err, errlen);
    free(src);
    return rc;
}

struct tmpl_set *tmpl_load(const char *dir, char *err, size_t errlen)
{
    struct tmpl_set *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!dir || !*dir)
        dir = STELLER_TEMPLATES_DIR;
    for (int k = 0; k < TMPL_NKINDS; k++) {
        for (int part = 0; part < NPARTS; part++) {
            if (load_part(&t->parts[k][part], dir, (enum tmpl_kind)k, (enum tmpl_part)part, err,
                          errlen) != 0) {
                tmpl_free(t);
                return NULL;
            }
        }
    }
    return t;
}

void tmpl_free(struct tmpl_set *t)
{
    if (!t)
        return;
    for (int k = 0; k < TMPL_NKINDS; k++) {
        for (int part = 0; part < NPARTS; part++) {
            free(t->parts[k][part].lit);
            free(t->parts[k][part].segs);
        }
    }
    free(t);
}

int tmpl_check(const char *dir, char *err, size_t errlen)
{
    struct tmpl_set *t = tmpl_load(dir, err, errlen);
    tmpl_free(t);
    return t ? 0 : -1;
}

/* ---------------------------------------------------------------- rendering */

static void sb_add_html(struct sbuf *b, const char *s)
{
    for (;;) {
        size_t run = strcspn(s, "&<>\"'");
        const char *ent;
        sb_addn(b, s, run);
        s += run;
        switch (*s) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: return;
        }
        sb_add(b, ent);
        s++;
    }
}

/* 0 with the malloc'd result in *out, or TMPL_ERR / TMPL_EBADVALUE with err. */
static int render_part(const struct part *p, enum tmpl_kind k, enum tmpl_part part,
                       const char *const *vals, char **out, char *err, size_t errlen)
{
    struct sbuf b = {0};
    int rc = TMPL_ERR;
    for (size_t i = 0; i < p->nsegs; i++) {
        const struct seg *s = &p->segs[i];
        const char *v;
        if (s->var < 0) {
            sb_addn(&b, p->lit + s->off, s->len);
            continue;
        }
        if (!(v = vals[s->var])) {
            snprintf(err, errlen, "%s.%s: no value for {%s}", kind_names[k], part_ext[part],
                     kind_ph[k][s->var]);
            goto fail;
        }
        if (part == PART_SUBJECT && strpbrk(v, "\r\n")) {
            snprintf(err, errlen,
                     "%s.subject: the value of {%s} holds CR or LF, not allowed in a subject",
                     kind_names[k], kind_ph[k][s->var]);
            rc = TMPL_EBADVALUE;
            goto fail;
        }
        if (part == PART_HTML)
            sb_add_html(&b, v);
        else
            sb_add(&b, v);
    }
    if ((*out = sb_take(&b)))
        return 0;
    snprintf(err, errlen, "out of memory");
fail:
    free(b.p);
    return rc;
}

int tmpl_render(const struct tmpl_set *t, enum tmpl_kind k, const struct tmpl_var *vars,
                size_t nvars, struct tmpl_msg *out, char *err, size_t errlen)
{
    const char *vals[TMPL_MAX_VARS] = {0};
    char **dst[NPARTS] = {&out->subject, &out->text, &out->html};

    memset(out, 0, sizeof(*out));
    if (!t || (unsigned)k >= TMPL_NKINDS) {
        snprintf(err, errlen, "no templates for kind %d", (int)k);
        return TMPL_ERR;
    }
    for (size_t j = nvars; j-- > 0;) { /* backwards, so the first of a name wins */
        int i = vars[j].name ? find_ph(k, vars[j].name, strlen(vars[j].name)) : -1;
        if (i >= 0)
            vals[i] = vars[j].value;
    }
    /* The subject first: a bad value there is reported before anything else. */
    for (int part = 0; part < NPARTS; part++) {
        int rc =
            render_part(&t->parts[k][part], k, (enum tmpl_part)part, vals, dst[part], err, errlen);
        if (rc != 0) {
            tmpl_msg_free(out);
            return rc;
        }
    }
    return 0;
}

void tmpl_msg_free(struct tmpl_msg *m)
{
    if (!m)
        return;
    free(m->subject);
    free(m->text);
    free(m->html);
    memset(m, 0, sizeof(*m));
}
