/*
 * screen_clock.c - the screening clock (screen_clock.h).  The test offset
 * file is tiny and local; reading it at each check is a test-only cost (the
 * setting is empty in production, then this is time(NULL)).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "screen_clock.h"

int64_t screen_clock_now(const struct moat_settings *set)
{
    int64_t now = (int64_t)time(NULL);
    if (set == NULL || set->test_clock_file == NULL || set->test_clock_file[0] == '\0')
        return now;
    FILE *f = fopen(set->test_clock_file, "r");
    if (f == NULL)
        return now;
    char line[32];
    if (fgets(line, sizeof line, f) != NULL) {
        char *end;
        long long off = strtoll(line, &end, 10);
        if (end != line && off > -(1LL << 40) && off < (1LL << 40))
            now += off;
    }
    fclose(f);
    return now;
}
