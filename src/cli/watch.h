/* `ferry migrate --wait`: progress, Ctrl-C as cancel, the final report. */
#ifndef FERRY_CLI_WATCH_H
#define FERRY_CLI_WATCH_H

#include <stdbool.h>

/* PUTs body to /v1/migration and waits for the migration to end; prints a
 * summary (json: the whole report) on stdout. Returns the exit code (130
 * when a Ctrl-C cancelled it and the VM runs on the source). */
int migrate_watch(const char *sock, const char *body, bool json);

#endif
