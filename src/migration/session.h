/* The session of one migration: a secret token the destination gives the
 * source on the main channel (REC_SESSION, inside TLS when it is on). Every
 * later connection of the migration (data, urgent, recovery) shows it in its
 * HELLO, so that knowing the VM's sizes is not enough to join or take over a
 * migration, a post-copy recovery above all. */
#ifndef FERRY_MIGRATION_SESSION_H
#define FERRY_MIGRATION_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MIG_TOKEN_LEN 32

/* Wire layout of REC_SESSION, 40 bytes. */
struct mig_session {
    uint8_t token[MIG_TOKEN_LEN];
    uint8_t reserved[8];        /* zero (a control record's last byte ends it) */
};
_Static_assert(sizeof(struct mig_session) == 40, "struct mig_session is 40 bytes on the wire");

/* A new random token; -errno if the kernel has no randomness to give. */
int mig_session_new(struct mig_session *s);
void mig_session_encode(const struct mig_session *s, uint8_t *buf);
/* -EBADMSG unless len is the struct's and the reserved bytes are zero. */
int mig_session_decode(const uint8_t *p, uint64_t len, struct mig_session *s);
/* Constant time: how long the compare takes says nothing about the token. */
bool mig_token_equal(const uint8_t *a, const uint8_t *b);

#endif
