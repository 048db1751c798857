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
 *
 * Layout of a directory (conf/templates/README.md): KIND.subject, KIND.txt and
 * KIND.html for KIND in welcome, activation, reengagement; each file at most
 * TMPL_MAX_FILE bytes of UTF-8; the subject one line. `{name}` is a placeholder,
 * `{{` a literal `{` and `}}` a literal `}` (a lone `}` is literal too).
 */
#ifndef STELLER_TMPL_H
#define STELLER_TMPL_H

#include <stddef.h>

enum tmpl_kind { TMPL_WELCOME = 0, TMPL_ACTIVATION, TMPL_REENGAGEMENT, TMPL_NKINDS };

#define TMPL_MAX_FILE (256 * 1024)

struct tmpl_set;

struct tmpl_var {
    const char *name;  /* placeholder name without braces */
    const char *value; /* raw text; escaped for HTML by tmpl_render() */
};

struct tmpl_msg {
    char *subject, *text, *html;
};

/* dir "" or NULL: the installed templates (STELLER_TEMPLATES_DIR, which CMake sets to
 * DATADIR/steller-worker/templates, where conf/templates is installed). NULL with
 * "FILE:LINE: why" (or "FILE: why", e.g. "FILE: missing file") in err. */
struct tmpl_set *tmpl_load(const char *dir, char *err, size_t errlen);
void tmpl_free(struct tmpl_set *t); /* NULL is fine */

/* Loads and frees: whether dir holds a valid set. 0, or -1 with err as tmpl_load(). */
int tmpl_check(const char *dir, char *err, size_t errlen);

/* tmpl_render() results besides 0. */
#define TMPL_ERR (-1)       /* a used placeholder has no value, or out of memory: a bug */
#define TMPL_EBADVALUE (-2) /* a value put in the subject holds CR or LF: bad input */

/*
 * Fills the templates of kind k with vars (looked up by name; the first of a name
 * wins; names the kind does not have are ignored). Values go in raw in the subject
 * and the text, HTML-escaped (& < > " ') in the html. Returns 0, or TMPL_ERR or
 * TMPL_EBADVALUE with the reason in err (it never holds a value) and out zeroed.
 * TMPL_EBADVALUE is the input's fault (header injection): dead-letter the job;
 * retrying cannot help.
 */
int tmpl_render(const struct tmpl_set *t, enum tmpl_kind k, const struct tmpl_var *vars,
                size_t nvars, struct tmpl_msg *out, char *err, size_t errlen);
void tmpl_msg_free(struct tmpl_msg *m); /* frees the strings and zeroes m */

/* "welcome", "activation", "reengagement"; NULL for a bad k. */
const char *tmpl_kind_name(enum tmpl_kind k);

/* The placeholders kind k defines, NULL-terminated (static storage). */
const char *const *tmpl_placeholders(enum tmpl_kind k);

#endif
