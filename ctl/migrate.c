/*
 * migrate.c - the migration runner behind `stellerctl migrate`.
 *
 * A run, on one blocking libpq connection:
 *   1. connect (connect_timeout 10 s unless the URL sets one) and quiet the
 *      NOTICEs that every rerun of an idempotent migration raises ("relation
 *      already exists, skipping");
 *   2. take the session advisory lock MIG_LOCK_KEY: a second runner waits there
 *      and then finds everything applied, so two never interleave;
 *   3. create the version table steller_schema_migrations if missing (not in a
 *      dry run, which changes nothing);
 *   4. checksum every embedded migration (SHA-256 of the file's bytes, computed
 *      by the server, the same hex as `sha256sum FILE`) and refuse to go on when
 *      an applied one has changed: what ran on the database is no longer what
 *      the source says, and only a person can tell which is right;
 *   5. apply each pending migration in name order, each in its own transaction:
 *      BEGIN; the file; INSERT its version; COMMIT. A failure rolls back that
 *      migration only; the ones before it stay applied.
 *
 * A migration file runs as one simple-query string, so it may hold many
 * statements and DO blocks, but no transaction control of its own (and so no
 * CREATE INDEX CONCURRENTLY).
 *
 * The password in the conninfo is never printed: libpq's messages are not
 * trusted to leave it out (a conninfo that does not parse is quoted back), so a
 * URL that does not parse gets our own message, and every other message has
 * the password replaced by *** before it leaves this file.
 */
#include "migrate.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MIG_TABLE "steller_schema_migrations"
#define MIG_LOCK_KEY "6004500397191678279" /* "STELLMIG" read as a big-endian int64 */
/* How long one migration waits for a table lock. An ALTER TABLE waiting on a long
 * API transaction would queue every later query on that table behind it; failing
 * (nothing applied, run again) is the lesser harm. */
#define MIG_LOCK_TIMEOUT "30s"
#define MIG_CONNECT_TIMEOUT "10"
#define BYTEA_OID 17 /* pg_type.oid of bytea (server header catalog/pg_type_d.h) */
#define SHA256_HEX 64
#define MAX_SECRETS 4

struct run {
    PGconn *conn;
    FILE *out;
    char *err;
    size_t errlen;
    int dry_run;
    PQconninfoOption *opts;           /* the parsed conninfo: where the secrets are */
    const char *secrets[MAX_SECRETS]; /* values of *password keywords, inside opts */
    char (*sums)[SHA256_HEX + 1];     /* checksum of mig_scripts[i] */
    PGresult *applied;                /* "Version", "Checksum" rows; NULL: no table yet */
};

/* ---- messages ---- */

/* Replaces every occurrence of each secret in s by "***" (by as many stars as it
 * has characters when it is shorter, so that s never grows). */
static void scrub(const struct run *r, char *s)
{
    for (int i = 0; i < MAX_SECRETS && r->secrets[i]; i++) {
        size_t slen = strlen(r->secrets[i]), stars = slen < 3 ? slen : 3;
        char *hit;

        for (char *from = s; (hit = strstr(from, r->secrets[i]));) {
            memset(hit, '*', stars);
            memmove(hit + stars, hit + slen, strlen(hit + slen) + 1);
            from = hit + stars;
        }
    }
}

static int fail(struct run *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct run *r, int code, const char *fmt, ...)
{
    va_list ap;

    if (!r->errlen)
        return code;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    scrub(r, r->err);
    return code;
}

/* s on one line: every run of white space holding a newline becomes one space,
 * trailing white space goes. libpq's messages end in "\n" and wrap with "\n\t". */
static const char *one_line(const char *s, char *buf, size_t size)
{
    size_t n = 0;

    while (*s && n + 1 < size) {
        size_t ws = strspn(s, " \t\r\n");
        if (ws) {
            int newline = memchr(s, '\n', ws) != NULL;
            if (!s[ws])
                break;
            if (newline) {
                buf[n++] = ' ';
                s += ws;
                continue;
            }
        }
        buf[n++] = *s++;
    }
    buf[n] = '\0';
    return buf;
}

/* The 1-based line of the character at 1-based position pos in sql (the server
 * counts characters, not bytes). 0 when pos is not in sql. */
static int line_of(const char *sql, long pos)
{
    int line = 1;

    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        if ((*p & 0xc0) != 0x80 && --pos == 0)
            return line;
        if (*p == '\n')
            line++;
    }
    return 0;
}

/* "message (SQLSTATE x) at line N: detail" from a failed result. sql, if given,
 * is the text the error position refers to. */
static const char *describe(const PGresult *res, const PGconn *conn, const char *sql, char *buf,
                            size_t size)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char flat[512], where[32] = "";
    int line = sql && pos ? line_of(sql, atol(pos)) : 0;
    int n;

    if (!msg) /* no result, or not an error from the server: libpq's own message */
        return one_line(PQerrorMessage(conn), buf, size);
    if (line)
        snprintf(where, sizeof where, " at line %d", line);
    n = snprintf(buf, size, "%s (SQLSTATE %s)%s", one_line(msg, flat, sizeof flat),
                 state ? state : "?", where);
    if (detail && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ": %s", one_line(detail, flat, sizeof flat));
    return buf;
}

/* Server warnings go to out (NOTICEs are switched off once connected). */
static void on_notice(void *arg, const char *message)
{
    struct run *r = arg;
    char buf[1024];

    one_line(message, buf, sizeof buf);
    scrub(r, buf);
    fprintf(r->out, "%s\n", buf);
}

/* ---- queries ---- */

/* Runs sql and checks that it succeeded; on failure sets err ("what: why") and
 * returns NULL. The caller PQclear()s the result. */
static PGresult *query(struct run *r, const char *what, const char *sql, int nparams,
                       const char *const *values)
{
    PGresult *res = nparams ? PQexecParams(r->conn, sql, nparams, NULL, values, NULL, NULL, 0)
                            : PQexec(r->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    char why[768];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    fail(r, MIG_EFAILED, "%s: %s", what, describe(res, r->conn, NULL, why, sizeof why));
    PQclear(res);
    return NULL;
}

static int command(struct run *r, const char *what, const char *sql)
{
    PGresult *res = query(r, what, sql, 0, NULL);

    PQclear(res);
    return res ? MIG_OK : MIG_EFAILED;
}

/* ---- the steps ---- */

/* Parses conninfo (our message if it does not parse: libpq's may quote it) and
 * remembers every *password value so that no message shows it. */
static int parse_conninfo(struct run *r, const char *conninfo)
{
    char *perr = NULL;
    int n = 0;

    r->opts = PQconninfoParse(conninfo, &perr);
    PQfreemem(perr);
    if (!r->opts)
        return fail(r, MIG_EBADURL,
                    "the database URL is neither a libpq URI "
                    "(postgresql://user@host:port/db) nor a conninfo string "
                    "(host=... dbname=...)");
    for (PQconninfoOption *o = r->opts; o->keyword && n < MAX_SECRETS; o++) {
        size_t len = strlen(o->keyword);
        if (o->val && o->val[0] && len >= 8 && strcmp(o->keyword + len - 8, "password") == 0)
            r->secrets[n++] = o->val;
    }
    return MIG_OK;
}

static int connect_db(struct run *r, const char *conninfo)
{
    /* dbname comes last so that what the URL says overrides the defaults before it. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {MIG_CONNECT_TIMEOUT, "stellerctl migrate", conninfo, NULL};
    char why[512];

    r->conn = PQconnectdbParams(keys, vals, 1);
    if (!r->conn)
        return fail(r, MIG_EUNREACHABLE, "cannot connect to the database: out of memory");
    if (PQstatus(r->conn) != CONNECTION_OK)
        return fail(r, MIG_EUNREACHABLE, "cannot connect to the database: %s",
                    one_line(PQerrorMessage(r->conn), why, sizeof why));
    PQsetNoticeProcessor(r->conn, on_notice, r);
    /* No server-side timeout may cut a migration or the wait for the lock short. */
    return command(r, "session settings",
                   "SET client_min_messages = warning; SET statement_timeout = 0; "
                   "SET lock_timeout = 0");
}

static int take_lock(struct run *r)
{
    PGresult *res =
        query(r, "advisory lock", "SELECT pg_try_advisory_lock(" MIG_LOCK_KEY ")", 0, NULL);
    int got;

    if (!res)
        return MIG_EFAILED;
    got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!got) {
        fprintf(r->out, "waiting for another stellerctl migrate on this database\n");
        fflush(r->out);
        if (command(r, "advisory lock", "SELECT pg_advisory_lock(" MIG_LOCK_KEY ")") != MIG_OK)
            return MIG_EFAILED;
    }
    return command(r, "session settings", "SET lock_timeout = '" MIG_LOCK_TIMEOUT "'");
}

/* Creates the version table (unless dry run) and reads what it holds. */
static int read_applied(struct run *r)
{
    PGresult *res;
    int exists;

    if (!r->dry_run && command(r, "creating " MIG_TABLE,
                               "CREATE TABLE IF NOT EXISTS " MIG_TABLE " ("
                               "\"Version\" text PRIMARY KEY, "
                               "\"AppliedAt\" timestamp with time zone NOT NULL DEFAULT now(), "
                               "\"Checksum\" text NOT NULL)") != MIG_OK)
        return MIG_EFAILED;
    res = query(r, "looking for " MIG_TABLE, "SELECT to_regclass('" MIG_TABLE "') IS NOT NULL", 0,
                NULL);
    if (!res)
        return MIG_EFAILED;
    exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists) /* dry run on a database never migrated */
        return MIG_OK;
    r->applied =
        query(r, "reading " MIG_TABLE,
              "SELECT \"Version\", \"Checksum\" FROM " MIG_TABLE " ORDER BY \"Version\"", 0, NULL);
    return r->applied ? MIG_OK : MIG_EFAILED;
}

static int checksum_all(struct run *r)
{
    static const Oid types[] = {BYTEA_OID};
    static const int formats[] = {1};

    r->sums = calloc(mig_nscripts, sizeof r->sums[0]);
    if (!r->sums)
        return fail(r, MIG_EFAILED, "out of memory");
    for (size_t i = 0; i < mig_nscripts; i++) {
        const char *const vals[] = {mig_scripts[i].sql};
        const int lens[] = {(int)strlen(mig_scripts[i].sql)};
        PGresult *res = PQexecParams(r->conn, "SELECT encode(sha256($1), 'hex')", 1, types, vals,
                                     lens, formats, 0);
        char why[512];

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fail(r, MIG_EFAILED, "checksum of %s: %s", mig_scripts[i].name,
                 describe(res, r->conn, NULL, why, sizeof why));
            PQclear(res);
            return MIG_EFAILED;
        }
        snprintf(r->sums[i], sizeof r->sums[i], "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    return MIG_OK;
}

static const char *applied_checksum(const struct run *r, const char *name)
{
    int rows = r->applied ? PQntuples(r->applied) : 0;

    for (int i = 0; i < rows; i++) {
        if (strcmp(PQgetvalue(r->applied, i, 0), name) == 0)
            return PQgetvalue(r->applied, i, 1);
    }
    return NULL;
}

static const struct mig_script *find_script(const char *name)
{
    for (size_t i = 0; i < mig_nscripts; i++) {
        if (strcmp(mig_scripts[i].name, name) == 0)
            return &mig_scripts[i];
    }
    return NULL;
}

/* Every applied migration must be the one embedded here, byte for byte. */
static int verify_applied(struct run *r)
{
    int rows = r->applied ? PQntuples(r->applied) : 0;

    for (size_t i = 0; i < mig_nscripts; i++) {
        const char *sum = applied_checksum(r, mig_scripts[i].name);
        if (sum && strcmp(sum, r->sums[i]) != 0)
            return fail(r, MIG_ECHANGED,
                        "migration %s was applied with checksum %s, but this stellerctl's copy "
                        "has %s: an applied migration must never change (put the change in a "
                        "new migration); nothing was applied",
                        mig_scripts[i].name, sum, r->sums[i]);
    }
    for (int i = 0; i < rows; i++) {
        const char *version = PQgetvalue(r->applied, i, 0);
        if (!find_script(version))
            fprintf(r->out,
                    "warning: the database has migration %s, which this stellerctl does "
                    "not know (applied by a newer one?)\n",
                    version);
    }
    return MIG_OK;
}

static int apply_one(struct run *r, size_t i)
{
    const struct mig_script *m = &mig_scripts[i];
    const char *const vals[] = {m->name, r->sums[i]};
    PGresult *res;
    char what[128], why[768];

    if (command(r, "BEGIN", "BEGIN") != MIG_OK)
        return MIG_EFAILED;
    res = PQexec(r->conn, m->sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(r, MIG_EFAILED, "migration %s failed, nothing of it was applied: %s", m->name,
             describe(res, r->conn, m->sql, why, sizeof why));
        PQclear(res);
        PQclear(PQexec(r->conn, "ROLLBACK"));
        return MIG_EFAILED;
    }
    PQclear(res);
    if (PQtransactionStatus(r->conn) != PQTRANS_INTRANS)
        return fail(r, MIG_EFAILED,
                    "migration %s ended its own transaction; a migration must "
                    "not hold BEGIN, COMMIT or ROLLBACK",
                    m->name);
    snprintf(what, sizeof what, "recording %s", m->name);
    res = query(r, what,
                "INSERT INTO " MIG_TABLE " (\"Version\", \"AppliedAt\", \"Checksum\") "
                "VALUES ($1, now(), $2)",
                2, vals);
    if (!res) {
        PQclear(PQexec(r->conn, "ROLLBACK"));
        return MIG_EFAILED;
    }
    PQclear(res);
    snprintf(what, sizeof what, "committing %s", m->name);
    if (command(r, what, "COMMIT") != MIG_OK)
        return MIG_EFAILED;
    fprintf(r->out, "applied %s\n", m->name);
    fflush(r->out);
    return MIG_OK;
}

static int apply_pending(struct run *r)
{
    int pending = 0;

    for (size_t i = 0; i < mig_nscripts; i++) {
        if (applied_checksum(r, mig_scripts[i].name))
            continue;
        pending++;
        if (r->dry_run) {
            fprintf(r->out, "pending %s\n", mig_scripts[i].name);
            continue;
        }
        if (apply_one(r, i) != MIG_OK)
            return MIG_EFAILED;
    }
    if (!pending)
        fprintf(r->out, "up to date\n");
    fflush(r->out);
    return MIG_OK;
}

int mig_run(const char *conninfo, int dry_run, FILE *out, char *err, size_t errlen)
{
    struct run r = {.out = out, .err = err, .errlen = errlen, .dry_run = dry_run};
    int rc;

    if (errlen)
        err[0] = '\0';
    rc = parse_conninfo(&r, conninfo);
    if (rc == MIG_OK)
        rc = connect_db(&r, conninfo);
    if (rc == MIG_OK)
        rc = take_lock(&r);
    if (rc == MIG_OK)
        rc = read_applied(&r);
    if (rc == MIG_OK)
        rc = checksum_all(&r);
    if (rc == MIG_OK)
        rc = verify_applied(&r);
    if (rc == MIG_OK)
        rc = apply_pending(&r);
    if (rc == MIG_EFAILED && r.conn && PQstatus(r.conn) == CONNECTION_BAD) {
        char why[1024];
        snprintf(why, sizeof why, "%s", err);
        rc = fail(&r, MIG_EUNREACHABLE, "lost the database connection: %s", why);
    }
    PQclear(r.applied);
    free(r.sums);
    PQfinish(r.conn); /* ends the session, and with it the advisory lock */
    PQconninfoFree(r.opts);
    return rc;
}
