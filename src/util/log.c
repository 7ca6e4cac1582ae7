#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static enum log_level log_level = LOG_INFO;
static char log_prefix[32] = "ferry";

void log_set_level(enum log_level level)
{
    log_level = level;
}

void log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

static const char *level_name(enum log_level level)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    return names[level];
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from vCPU threads do not interleave. */
    fprintf(stderr, "%s: %s: %s\n", log_prefix, level_name(level), line);
}
