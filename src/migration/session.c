#include "migration/session.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int mig_session_new(struct mig_session *s)
{
    size_t got = 0;

    memset(s, 0, sizeof(*s));
    while (got < sizeof(s->token)) {
        ssize_t n = getrandom(s->token + got, sizeof(s->token) - got, 0);
        if (n < 0 && errno != EINTR)
            return -errno;
        got += n > 0 ? (size_t)n : 0;
    }
    return 0;
}

void mig_session_encode(const struct mig_session *s, uint8_t *buf)
{
    memcpy(buf, s->token, MIG_TOKEN_LEN);
    memset(buf + MIG_TOKEN_LEN, 0, sizeof(s->reserved));
}

int mig_session_decode(const uint8_t *p, uint64_t len, struct mig_session *s)
{
    static const uint8_t zero[sizeof(s->reserved)];

    if (len != sizeof(*s) || memcmp(p + MIG_TOKEN_LEN, zero, sizeof(zero)) != 0)
        return -EBADMSG;
    memcpy(s->token, p, MIG_TOKEN_LEN);
    memset(s->reserved, 0, sizeof(s->reserved));
    return 0;
}

bool mig_token_equal(const uint8_t *a, const uint8_t *b)
{
    uint8_t diff = 0;

    for (size_t i = 0; i < MIG_TOKEN_LEN; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}
