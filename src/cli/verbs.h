/* CLI verbs that take more than --api-socket (snapshot; migration later). */
#ifndef FERRY_CLI_VERBS_H
#define FERRY_CLI_VERBS_H

/* ferry snapshot --api-socket PATH FILE [--resume]; returns the exit code. */
int verb_snapshot_main(int argc, char **argv);
/* ferry migrate --api-socket PATH tcp:HOST:PORT [options] [--wait] */
int verb_migrate_main(int argc, char **argv);
/* ferry migrate-status|migrate-cancel --api-socket PATH */
int verb_migrate_simple_main(int argc, char **argv);

#endif
