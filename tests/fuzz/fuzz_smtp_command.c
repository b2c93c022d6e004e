/*
 * fuzz_smtp_command.c - libFuzzer target for the SMTP command parsers
 * (src/smtp/smtp_parse.c): the raw input is one command line; the verb
 * decides which argument parser runs, and every parser also sees the
 * whole input directly.  Checks the parsers' own invariants: results are
 * NUL-terminated and within their documented bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "smtp/smtp_parse.h"

static void check_addr(const struct smtp_addr *a)
{
    if (strlen(a->addr) > SMTP_PATH_MAX || strlen(a->local) > SMTP_LOCAL_MAX ||
        strlen(a->domain) > SMTP_DOMAIN_MAX)
        abort();
    for (const char *p = a->addr; *p; p++)
        if (*p == '\r' || *p == '\n')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct smtp_parse_error err;
    struct smtp_cmdline cmd;
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;
    struct smtp_addr a;
    char helo[SMTP_HELO_MAX + 1];
    size_t used;

    if (smtp_parse_command(in, size, &cmd, &err) == 0) {
        if (cmd.args + cmd.args_len > in + size || memchr(cmd.args, '\n', cmd.args_len))
            abort();
        if (strcmp(cmd.verb, "MAIL") == 0 && smtp_parse_mail(cmd.args, cmd.args_len, &m, &err) == 0)
            check_addr(&m.path);
        if (strcmp(cmd.verb, "RCPT") == 0 && smtp_parse_rcpt(cmd.args, cmd.args_len, size & 1, &r, &err) == 0) {
            check_addr(&r.path);
            if (strlen(r.orcpt) > SMTP_ORCPT_MAX)
                abort();
        }
        if (strcmp(cmd.verb, "EHLO") == 0 && smtp_parse_helo(cmd.args, cmd.args_len, helo, sizeof helo, &err) == 0)
            if (strlen(helo) > SMTP_HELO_MAX)
                abort();
    }
    if (smtp_parse_path(in, size, SMTP_PATH_SENDER, &a, &used, &err) == 0) {
        if (used > size)
            abort();
        check_addr(&a);
    }
    if (smtp_parse_path(in, size, SMTP_PATH_RCPT, &a, &used, &err) == 0)
        check_addr(&a);
    if (smtp_parse_mail(in, size, &m, &err) == 0 && strlen(m.envid) > SMTP_ENVID_MAX)
        abort();
    (void)smtp_parse_rcpt(in, size, true, &r, &err);
    (void)smtp_xtext_valid(in, size, size & 2);
    return 0;
}
