/* CLI verbs that take more than --api-socket (snapshot; migration later). */
#ifndef FERRY_CLI_VERBS_H
#define FERRY_CLI_VERBS_H

/* ferry snapshot --api-socket PATH FILE [--resume]; returns the exit code. */
int verb_snapshot_main(int argc, char **argv);

#endif
