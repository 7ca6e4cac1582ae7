/* Freestanding helpers shared by kernel and user code: memory, strings, formatting. */
#include "guest.h"

/* String instructions: short, and gcc cannot turn them back into memset/memcpy calls. */
void *memset(void *d, int c, size_t n)
{
    void *p = d;

    asm volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *p = d;

    asm volatile("rep movsb" : "+D"(p), "+S"(s), "+c"(n) : : "memory");
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;

    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] - y[i];
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}

/* Decimal digits only; false on empty input, junk or overflow. */
bool parse_u64(const char *s, size_t n, u64 *out)
{
    u64 v = 0;

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (~0ULL - 9) / 10)
            return false;
        v = v * 10 + (u64)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* (hi:lo) / d; the caller guarantees hi < d so the quotient fits (no libgcc here). */
u64 div128(u64 hi, u64 lo, u64 d)
{
    u64 q, r;

    asm("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
    return q;
}

struct fmt_out {
    char *buf;
    size_t size;
    size_t len;
};

static void fmt_putc(struct fmt_out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void fmt_num(struct fmt_out *o, u64 v, unsigned base, bool neg, int width, char pad)
{
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        tmp[n++] = '-';
    for (int i = n; i < width; i++)
        fmt_putc(o, pad);
    while (n)
        fmt_putc(o, tmp[--n]);
}

/* printf subset: %d %u %x %s %c %% with l/ll/z, a field width and '0' padding. */
int fmt_vsn(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct fmt_out o = { buf, size, 0 };

    for (; *fmt; fmt++) {
        int width = 0, lng = 0;
        char pad = ' ';

        if (*fmt != '%') {
            fmt_putc(&o, *fmt);
            continue;
        }
        if (*++fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd': {
            s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);
            fmt_num(&o, v < 0 ? -(u64)v : (u64)v, 10, v < 0, width, pad);
            break;
        }
        case 'u':
        case 'x': {
            u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned);
            fmt_num(&o, v, *fmt == 'x' ? 16 : 10, false, width, pad);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s)
                fmt_putc(&o, *s++);
            break;
        }
        case 'c':
            fmt_putc(&o, (char)va_arg(ap, int));
            break;
        case '%':
            fmt_putc(&o, '%');
            break;
        default:
            return -1;
        }
    }
    if (o.size)
        o.buf[MIN(o.len, o.size - 1)] = 0;
    return (int)o.len;
}

int fmt_sn(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = fmt_vsn(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
