#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t clock_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t time_now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

uint64_t thread_cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

struct timespec time_ns_to_timespec(uint64_t ns)
{
    return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ULL),
                              .tv_nsec = (long)(ns % 1000000000ULL) };
}

static int read_fd_all(int fd, uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;   /* the file shrank under us */
        done += (size_t)n;
    }
    return 0;
}

/* Opens a regular file for reading; its size in *size. */
static int file_open_regular(const char *path, size_t *size)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        close(fd);
        return ret;
    }
    *size = (size_t)st.st_size;
    return fd;
}

int file_read_head(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    int fd = file_open_regular(path, len), ret;

    if (fd < 0)
        return fd;
    *len = MIN(*len, cap);
    ret = read_fd_all(fd, buf, *len);
    close(fd);
    return ret;
}

int file_read_all(const char *path, uint8_t **buf, size_t *len)
{
    int fd = file_open_regular(path, len), ret;

    if (fd < 0)
        return fd;
    *buf = malloc(*len ? *len : 1);
    if (!*buf) {
        close(fd);
        return -ENOMEM;
    }
    ret = read_fd_all(fd, *buf, *len);
    close(fd);
    if (ret < 0) {
        free(*buf);
        *buf = NULL;
    }
    return ret;
}

int fd_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}
