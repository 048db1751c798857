/*
 * tmpl.h - the email templates: a subject, a plain-text part and an HTML part for
 * each kind of email, with named placeholders ({business_name}).
 *
 * tmpl_load() reads and checks a whole directory at once, so a template that names
 * an unknown placeholder (or one its kind does not have) is an error at start or
 * at SIGHUP, never a broken email later. Values are HTML-escaped in the HTML part
 * only.
 *
 * Ownership: a tmpl_set is immutable after tmpl_load() until tmpl_free(); a
 * rendered tmpl_msg holds three malloc'd strings freed by tmpl_msg_free().
 */
#ifndef STELLER_TMPL_H
#define STELLER_TMPL_H

#include <stddef.h>

enum tmpl_kind { TMPL_WELCOME = 0, TMPL_ACTIVATION, TMPL_REENGAGEMENT, TMPL_NKINDS };

struct tmpl_set;

struct tmpl_var {
    const char *name;  /* placeholder name without braces */
    const char *value; /* raw text; escaped for HTML by tmpl_render() */
};

struct tmpl_msg {
    char *subject, *text, *html;
};

/* dir "" or NULL: the installed templates. NULL with "FILE:LINE: why" in err. */
struct tmpl_set *tmpl_load(const char *dir, char *err, size_t errlen);
void tmpl_free(struct tmpl_set *t);

/* 0, or -1 with the reason in err (a placeholder of the kind without a value). */
int tmpl_render(const struct tmpl_set *t, enum tmpl_kind k, const struct tmpl_var *vars,
                size_t nvars, struct tmpl_msg *out, char *err, size_t errlen);
void tmpl_msg_free(struct tmpl_msg *m);

#endif
