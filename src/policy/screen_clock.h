/*
 * screen_clock.h - the clock of inbound screening (greylisting windows,
 * permitted-sender expiry): the wall clock plus, in tests only, an offset
 * in seconds read from the file named by the test_clock_file setting.
 */
#ifndef MOAT_SCREEN_CLOCK_H
#define MOAT_SCREEN_CLOCK_H

#include <stdint.h>
#include "../core/settings.h"

/* screen_clock_now - unix seconds; set NULL or no test_clock_file: time(NULL) */
int64_t screen_clock_now(const struct moat_settings *set);

#endif
