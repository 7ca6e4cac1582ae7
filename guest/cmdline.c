/* Command-line options: space-separated key=value; unknown keys are reported and skipped. */
#include "user.h"

struct config cfg;

static bool str_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static void config_bad(const char *k, size_t kn, const char *v, size_t vn)
{
    char key[64], val[64];

    kn = MIN(kn, sizeof(key) - 1);
    vn = MIN(vn, sizeof(val) - 1);
    memcpy(key, k, kn);
    key[kn] = 0;
    memcpy(val, v, vn);
    val[vn] = 0;
    con_printf("WARN bad value %s=%s\n", key, val);
}

static void config_unknown(const char *k, size_t kn)
{
    char key[64];

    kn = MIN(kn, sizeof(key) - 1);
    memcpy(key, k, kn);
    key[kn] = 0;
    con_printf("WARN unknown option %s\n", key);
}

/* A.B.C.D into host order. */
static bool parse_ip(const char *s, size_t n, u32 *out)
{
    u32 ip = 0, parts = 0;
    size_t i = 0;

    while (i < n && parts < 4) {
        size_t j = i;
        u64 b;

        while (j < n && s[j] != '.')
            j++;
        if (!parse_u64(s + i, j - i, &b) || b > 255)
            return false;
        ip = ip << 8 | (u32)b;
        parts++;
        i = j + 1;
        if (j == n)
            break;
    }
    *out = ip;
    return parts == 4 && i >= n + 1;
}

/* Options of the virtio drivers; false if k is not one of them. */
static bool config_set_virtio(const char *k, size_t kn, const char *v, size_t vn)
{
    u64 n;
    u32 ip;
    bool num = parse_u64(v, vn, &n);

    if (str_is(k, kn, "blktest") && num)
        cfg.blktest = n != 0;
    else if (str_is(k, kn, "blk.loop") && num)
        cfg.blk_loop = n != 0;
    else if (str_is(k, kn, "blk.mib") && num && n >= 1 && n <= 1 << 20)
        cfg.blk_mib = n;
    else if (str_is(k, kn, "blkbench") && num)
        cfg.blkbench = n != 0;
    else if (str_is(k, kn, "blkbench.mib") && num && n >= 2 && n <= 1 << 20)
        cfg.blk_bench_mib = n;
    else if (str_is(k, kn, "net") && num)
        cfg.net = n != 0;
    else if (str_is(k, kn, "net.ip") && parse_ip(v, vn, &ip))
        cfg.net_ip = ip;
    else if (str_is(k, kn, "net.udp") && num && n >= 1 && n <= 65535)
        cfg.net_udp = (u16)n;
    else if (str_is(k, kn, "blktest") || str_is(k, kn, "blk.loop") || str_is(k, kn, "blk.mib") ||
             str_is(k, kn, "blkbench") || str_is(k, kn, "blkbench.mib") || str_is(k, kn, "net") ||
             str_is(k, kn, "net.ip") || str_is(k, kn, "net.udp"))
        config_bad(k, kn, v, vn);
    else
        return false;
    return true;
}

static void config_set(const char *k, size_t kn, const char *v, size_t vn)
{
    u64 n;
    bool num = parse_u64(v, vn, &n);

    if (str_is(k, kn, "dirtier.mib") && num)
        cfg.dirtier_mib = n;
    else if (str_is(k, kn, "dirtier.rate") && (num || str_is(v, vn, "-1")))
        cfg.dirtier_rate = num ? MIN(n, 1000000000ULL) : RATE_MAX;
    else if (str_is(k, kn, "dirtier.cpus") && num)
        cfg.dirtier_cpus = (u32)MIN(n, 0xffffffffULL);
    else if (str_is(k, kn, "dirtier.pattern") && str_is(v, vn, "seq"))
        cfg.pattern = PATTERN_SEQ;
    else if (str_is(k, kn, "dirtier.pattern") && str_is(v, vn, "random"))
        cfg.pattern = PATTERN_RANDOM;
    else if (str_is(k, kn, "tick.us") && num)
        cfg.tick_us = n;
    else if (str_is(k, kn, "boot.trace") && num)
        cfg.boot_trace = n != 0;
    else if (str_is(k, kn, "dirtier.mib") || str_is(k, kn, "dirtier.rate") ||
             str_is(k, kn, "dirtier.cpus") || str_is(k, kn, "dirtier.pattern") ||
             str_is(k, kn, "tick.us") || str_is(k, kn, "boot.trace"))
        config_bad(k, kn, v, vn);
    else if (!config_set_virtio(k, kn, v, vn))
        config_unknown(k, kn);
}

void config_parse(const char *s, u32 cpus)
{
    cfg = (struct config){ .dirtier_mib = 64, .dirtier_cpus = cpus, .pattern = PATTERN_SEQ,
                           .blk_mib = 4, .blk_bench_mib = 128, .net_ip = 0x0a630002,
                           .net_udp = 7 };
    while (*s) {
        const char *tok, *eq;
        size_t len = 0;

        while (*s == ' ')
            s++;
        tok = s;
        while (s[len] && s[len] != ' ')
            len++;
        s += len;
        if (!len)
            continue;
        for (eq = tok; eq < tok + len && *eq != '='; eq++)
            ;
        if (eq == tok + len)
            config_set(tok, len, eq, 0);
        else
            config_set(tok, (size_t)(eq - tok), eq + 1, (size_t)(tok + len - eq - 1));
    }
    if (cfg.dirtier_cpus < 1 || cfg.dirtier_cpus > cpus) {
        u32 k = cfg.dirtier_cpus < 1 ? 1 : cpus;

        con_printf("WARN dirtier.cpus=%u clamped to %u\n", cfg.dirtier_cpus, k);
        cfg.dirtier_cpus = k;
    }
}
