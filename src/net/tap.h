/* Tap backend for virtio-net: a multi-queue tap with the virtio-net header,
 * and the pure helpers of the --net option (MAC parsing and defaults). */
#ifndef FERRY_NET_TAP_H
#define FERRY_NET_TAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_MAX_DEVICES 4
#define NET_IFNAMSIZ    16
#define NET_MAC_LEN     6

struct net_config {
    char tap[NET_IFNAMSIZ];
    uint8_t mac[NET_MAC_LEN];
    bool mac_given;
};

/* Offloads the tap can hand us (TUNSETOFFLOAD probe); TUN_F_* bits. */
struct tap {
    int fd;
    char name[NET_IFNAMSIZ];
    unsigned offloads;        /* TUN_F_* accepted by this tap */
    bool attached;            /* this queue takes part in the tap's traffic */
    bool mq;                  /* IFF_MULTI_QUEUE: queues can be detached */
    uint64_t open_dropped;    /* frames that reached this queue while tap_open
                                 had it attached (attach=false): dropped */
};

/* "aa:bb:cc:dd:ee:ff" (pure). -EINVAL unless six hex pairs, unicast. */
int net_mac_parse(const char *s, uint8_t mac[NET_MAC_LEN]);
/* Writes 18 bytes including the NUL. */
void net_mac_format(const uint8_t mac[NET_MAC_LEN], char out[18]);
/* Stable locally administered MAC: 52:54:00 + a hash of the tap name and index. */
void net_mac_default(const char *tap, unsigned index, uint8_t mac[NET_MAC_LEN]);
/* Parses "tap=NAME[,mac=MAC]" (pure). */
int net_parse_option(const char *s, unsigned index, struct net_config *out,
                     char *err, size_t errlen);

/* Opens (creating if needed) a multi-queue tap with a 12-byte vnet header.
 * attach=false: the queue starts detached and receives nothing until
 * tap_attach() (a migration destination takes over at resume). Opening
 * attaches a queue for a moment (the kernel has no other way), so frames
 * for another process on the tap can land there: they are counted in
 * t->open_dropped. */
int tap_open(struct tap *t, const char *name, bool attach);
/* Takes every frame queued for this fd off the tap; returns how many. */
uint64_t tap_drain(struct tap *t);
/* Joins / leaves the tap's traffic (TUNSETQUEUE); idempotent. */
int tap_attach(struct tap *t, bool on);
/* Enables the offloads (TUN_F_*) the guest negotiated, within t->offloads. */
int tap_set_offload(struct tap *t, unsigned flags);
void tap_close(struct tap *t);
/* The host's count of packets it could not hand to the tap (no queue
 * attached, queue full): /proc/net/dev "tx drop" of this netns. */
uint64_t tap_host_drops(const struct tap *t);
/* Sends one frame (with a zeroed vnet header) to the host. */
int tap_send(struct tap *t, const void *frame, size_t len);

#endif
