/*
 * conf_file.c - a temporary moat.conf for the unit tests (conf_file.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <cmocka.h>
#include "core/core.h"
#include "conf_file.h"

const char *write_conf(const char *text)
{
    static char path[64];
    xsnprintf(path, sizeof path, "/tmp/moat-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}
