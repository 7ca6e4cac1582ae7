#include "net/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"

#define TAP_VNET_HDR_LEN 12   /* struct virtio_net_hdr_v1 (VERSION_1 always has num_buffers) */
#define TAP_ALL_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int net_mac_parse(const char *s, uint8_t mac[NET_MAC_LEN])
{
    uint8_t m[NET_MAC_LEN];

    if (strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < NET_MAC_LEN; i++) {
        int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
            return -EINVAL;
        m[i] = (uint8_t)(hi << 4 | lo);
    }
    if (m[0] & 1)   /* a multicast address cannot be a NIC's */
        return -EINVAL;
    memcpy(mac, m, NET_MAC_LEN);
    return 0;
}

void net_mac_format(const uint8_t mac[NET_MAC_LEN], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x",
             mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

/* FNV-1a: stable across runs and hosts, so a VM keeps its MAC. */
void net_mac_default(const char *tap, unsigned index, uint8_t mac[NET_MAC_LEN])
{
    uint32_t h = 2166136261u;

    for (const char *p = tap; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ index) * 16777619u;
    mac[0] = 0x52, mac[1] = 0x54, mac[2] = 0x00;
    mac[3] = (uint8_t)(h >> 16), mac[4] = (uint8_t)(h >> 8), mac[5] = (uint8_t)h;
}

static int net_parse_kv(const char *kv, size_t n, struct net_config *out, char *err,
                        size_t errlen)
{
    char val[32];

    if (n > 4 && strncmp(kv, "tap=", 4) == 0) {
        if (n - 4 >= NET_IFNAMSIZ) {
            snprintf(err, errlen, "--net: tap name '%.*s' is longer than %d characters",
                     (int)(n - 4), kv + 4, NET_IFNAMSIZ - 1);
            return -EINVAL;
        }
        memcpy(out->tap, kv + 4, n - 4);
        out->tap[n - 4] = 0;
        return 0;
    }
    if (n > 4 && n - 4 < sizeof(val) && strncmp(kv, "mac=", 4) == 0) {
        memcpy(val, kv + 4, n - 4);
        val[n - 4] = 0;
        if (net_mac_parse(val, out->mac) == 0)
            return out->mac_given = true, 0;
        snprintf(err, errlen, "--net: '%s' is not a unicast MAC aa:bb:cc:dd:ee:ff", val);
        return -EINVAL;
    }
    snprintf(err, errlen, "--net: unknown or empty setting '%.*s' (tap=NAME[,mac=MAC])",
             (int)n, kv);
    return -EINVAL;
}

int net_parse_option(const char *s, unsigned index, struct net_config *out,
                     char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    while (*s) {
        size_t n = strcspn(s, ",");
        int ret = net_parse_kv(s, n, out, err, errlen);

        if (ret < 0)
            return ret;
        s += n + (s[n] == ',');
    }
    if (!out->tap[0]) {
        snprintf(err, errlen, "--net: tap=NAME is required");
        return -EINVAL;
    }
    if (!out->mac_given)
        net_mac_default(out->tap, index, out->mac);
    return 0;
}

static int tap_ioctl(struct tap *t, unsigned long req, void *arg, const char *what)
{
    if (ioctl(t->fd, req, arg) < 0) {
        int err = -errno;
        log_err("tap %s: %s: %s", t->name, what, strerror(errno));
        return err;
    }
    return 0;
}

/* Multi-queue lets a migration destination on the same host hold the tap
 * (detached) while the source still runs; a tap created elsewhere without
 * multi_queue is used single-queue. */
static int tap_setiff(struct tap *t, const char *name)
{
    struct ifreq ifr = { 0 };

    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    t->mq = true;
    if (ioctl(t->fd, TUNSETIFF, &ifr) == 0)
        goto done;
    t->mq = false;
    if (errno != EINVAL)
        return tap_ioctl(t, TUNSETIFF, &ifr, "TUNSETIFF");
    log_warn("tap %s is not multi-queue: a migration on this host cannot share it", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (tap_ioctl(t, TUNSETIFF, &ifr, "TUNSETIFF") < 0)
        return -errno;
done:
    snprintf(t->name, sizeof(t->name), "%s", ifr.ifr_name);
    return 0;
}

static void tap_probe_offloads(struct tap *t)
{
    static const unsigned tries[] = { TUN_F_CSUM, TUN_F_CSUM | TUN_F_TSO4,
                                      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
                                      TAP_ALL_OFFLOADS };

    t->offloads = 0;
    for (unsigned i = 0; i < sizeof(tries) / sizeof(tries[0]); i++)
        if (ioctl(t->fd, TUNSETOFFLOAD, tries[i]) == 0)
            t->offloads = tries[i];
    /* Nothing until a guest negotiates them (tap_set_offload). */
    if (ioctl(t->fd, TUNSETOFFLOAD, 0) < 0)
        log_warn("tap %s: clearing offloads: %s", t->name, strerror(errno));
}

int tap_open(struct tap *t, const char *name, bool attach)
{
    int hdr = TAP_VNET_HDR_LEN, ret;

    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (t->fd < 0) {
        ret = -errno;
        log_err("tap %s: /dev/net/tun: %s", name, strerror(errno));
        return ret;
    }
    t->attached = true;
    ret = tap_setiff(t, name);
    if (ret == 0)
        ret = tap_ioctl(t, TUNSETVNETHDRSZ, &hdr, "TUNSETVNETHDRSZ");
    /* Probed while attached (a detached queue cannot set them), so the
     * features offered to the guest are the same on every host. */
    if (ret == 0)
        tap_probe_offloads(t);
    if (ret == 0 && !attach) {
        t->open_dropped = tap_drain(t);   /* the kernel would purge them uncounted */
        ret = tap_attach(t, false);
    }
    if (ret < 0)
        tap_close(t);
    return ret;
}

uint64_t tap_drain(struct tap *t)
{
    uint8_t frame[64];   /* a short read still takes the whole frame off the queue */
    uint64_t n = 0;

    while (read(t->fd, frame, sizeof(frame)) >= 0)
        n++;
    return n;
}

int tap_attach(struct tap *t, bool on)
{
    struct ifreq ifr = { .ifr_flags = on ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE };
    int ret;

    if (t->fd < 0 || t->attached == on || !t->mq)
        return 0;
    ret = tap_ioctl(t, TUNSETQUEUE, &ifr, on ? "attach queue" : "detach queue");
    if (ret == 0)
        t->attached = on;
    return ret;
}

int tap_set_offload(struct tap *t, unsigned flags)
{
    if (!t->attached || !t->offloads)
        return 0;
    return tap_ioctl(t, TUNSETOFFLOAD, (void *)(unsigned long)(flags & t->offloads),
                     "TUNSETOFFLOAD");
}

void tap_close(struct tap *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    t->attached = false;
}

uint64_t tap_host_drops(const struct tap *t)
{
    char line[512], name[NET_IFNAMSIZ + 2];
    unsigned long long f[12] = { 0 };
    FILE *fp = fopen("/proc/net/dev", "re");

    if (!fp)
        return 0;
    snprintf(name, sizeof(name), "%s:", t->name);
    while (fgets(line, sizeof(line), fp)) {
        char *p = line + strspn(line, " ");

        if (strncmp(p, name, strlen(name)) != 0)
            continue;
        sscanf(p + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
               &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9], &f[10],
               &f[11]);
        break;
    }
    fclose(fp);
    return f[11];
}

int tap_send(struct tap *t, const void *frame, size_t len)
{
    uint8_t hdr[TAP_VNET_HDR_LEN] = { 0 };
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)frame, len } };

    return writev(t->fd, iov, 2) < 0 ? -errno : 0;
}
