/*
 * conf_file.h - a temporary moat.conf for the unit tests that read one
 * (test_settings.c, test_service.c).
 */
#ifndef MOAT_TEST_CONF_FILE_H
#define MOAT_TEST_CONF_FILE_H

/* write_conf - a new temporary file holding text; returns its path (static:
 * valid until the next call); the caller unlinks it */
const char *write_conf(const char *text);

#endif
