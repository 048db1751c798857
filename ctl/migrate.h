/*
 * migrate.h - applies the schema migrations (schema/NNN_name.sql) to PostgreSQL:
 * `stellerctl migrate`.
 *
 * The SQL files are compiled into the binary (ctl/embed_schema.cmake generates
 * mig_scripts[]), so the migrations a stellerctl applies are the ones it was
 * built with, whatever is installed beside it. What has been applied is recorded
 * in the table steller_schema_migrations ("Version", "AppliedAt", "Checksum"),
 * not in EF Core's __EFMigrationsHistory, which the API owns.
 *
 * Blocking libpq: this is for the command line, never for a worker's loop.
 */
#ifndef STELLER_MIGRATE_H
#define STELLER_MIGRATE_H

#include <stddef.h>
#include <stdio.h>

/* One embedded migration. Both strings are static and live as long as the program. */
struct mig_script {
    const char *name; /* "003_wallet_histories": the file name without .sql; the version */
    const char *sql;  /* the file's bytes, NUL-terminated */
};

/* Sorted by name, which is the order they are applied in. Generated at build time. */
extern const struct mig_script mig_scripts[];
extern const size_t mig_nscripts;

enum mig_err {
    MIG_OK = 0,
    MIG_EBADURL = -1,      /* the conninfo is neither a libpq URI nor a conninfo string */
    MIG_EUNREACHABLE = -2, /* cannot connect, or the connection broke */
    MIG_EFAILED = -3,      /* a migration failed (and was rolled back), or SQL on the way did */
    MIG_ECHANGED = -4,     /* an applied migration's checksum differs from the embedded file */
};

/*
 * Connects to conninfo (libpq URI or conninfo string), takes a session advisory
 * lock so that two runners never interleave, creates the version table if it is
 * missing, checks that no applied migration has changed, and applies each
 * pending one in its own transaction, in name order. Writes one line per
 * migration to out: "applied NAME", or with dry_run "pending NAME" (dry_run
 * changes nothing, not even the version table); "up to date" when nothing is
 * pending.
 *
 * Returns MIG_OK or a negative enum mig_err with a one-line reason in err
 * (errlen bytes, always NUL-terminated). Neither err nor out ever holds the
 * password of conninfo. Migrations applied before a failure stay applied.
 */
int mig_run(const char *conninfo, int dry_run, FILE *out, char *err, size_t errlen);

#endif
