/* Socket writes that notice a peer which stopped reading. */
#ifndef FERRY_UTIL_SOCKIO_H
#define FERRY_UTIL_SOCKIO_H

#include <stdbool.h>
#include <stddef.h>

/* Writes all of buf to a socket, retrying short writes. Returns -ETIMEDOUT
 * when a write blocked for the socket's whole SO_SNDTIMEO and the TCP peer
 * acknowledged nothing meanwhile; other failures as -errno. */
int sock_write_all(int fd, const void *buf, size_t len);
/* True if fd is a socket. */
bool fd_is_socket(int fd);

#endif
