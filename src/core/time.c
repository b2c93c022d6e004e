/*
 * time.c - clocks and date formats.  Timers and timeouts use the monotonic
 * clock; anything shown to people or written into mail uses wall time.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "core.h"

uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* time_rfc5322 - RFC 5322 3.3 date-time in UTC, English names whatever the locale */
void time_rfc5322(char *dst, size_t size, time_t t)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(dst, size, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void time_iso8601(char *dst, size_t size, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(dst, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && size)
        dst[0] = '\0';
}
