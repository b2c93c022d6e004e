/*
 * smtp_tlsprobe.c - one server's STARTTLS class (smtp_tlsprobe.h): a VERIFY
 * connection, and on a certificate failure an ENCRYPT one that tells
 * "relaxed" from "unsupported".  Owns one struct tls_probe per call, freed
 * right after the callback.
 */
#include <stdlib.h>
#include <string.h>
#include "smtp_tlsprobe.h"

struct tls_probe {
    struct smtp_client_config cfg;
    struct sockaddr_storage sa;
    socklen_t salen;
    char name[256];
    char verify_diag[SMTP_DIAG_MAX];
    smtp_tls_probe_cb cb;
    void *arg;
};

static const char *const class_names[] = {
    [SMTP_TLS_STRICT] = "strict",
    [SMTP_TLS_RELAXED] = "relaxed",
    [SMTP_TLS_UNSUPPORTED] = "unsupported",
    [SMTP_TLS_UNREACHABLE] = "unreachable",
};

const char *smtp_tls_class_name(enum smtp_tls_class c)
{
    return (size_t)c < sizeof class_names / sizeof class_names[0] ? class_names[c] : "?";
}

/* finish - answer and free the probe */
static void finish(struct tls_probe *p, struct smtp_conn *c, enum smtp_tls_class cls,
                   enum smtp_conn_error err, const char *why)
{
    smtp_tls_probe_cb cb = p->cb;
    void *arg = p->arg;
    char copy[700];
    str_copy(copy, sizeof copy, why);
    free(p);
    cb(arg, c, cls, err, copy);
}

static void ready_encrypt(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                          const char *diag)
{
    struct tls_probe *p = arg;
    char why[700];
    (void)code;
    if (e == SMTP_CONN_OK) {
        if (strcasestr(p->verify_diag, "mismatch") != NULL)
            xsnprintf(why, sizeof why, "encrypted, but the certificate name does not match %s (%s)",
                      p->name, p->verify_diag);
        else
            xsnprintf(why, sizeof why, "encrypted, but the certificate is not trusted (%s)",
                      p->verify_diag);
        finish(p, c, SMTP_TLS_RELAXED, e, why);
    } else if (e == SMTP_CONN_TLS || e == SMTP_CONN_TLS_REQUIRED) {
        xsnprintf(why, sizeof why, "the TLS handshake failed: %s", diag);
        finish(p, NULL, SMTP_TLS_UNSUPPORTED, e, why);
    } else {
        finish(p, NULL, SMTP_TLS_UNREACHABLE, e, diag);
    }
}

static void ready_verify(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                         const char *diag)
{
    struct tls_probe *p = arg;
    (void)code;
    if (e == SMTP_CONN_OK) {
        finish(p, c, SMTP_TLS_STRICT, e, "trusted certificate, name matches");
    } else if (e == SMTP_CONN_TLS_REQUIRED) {
        finish(p, NULL, SMTP_TLS_UNSUPPORTED, e, "the server does not offer STARTTLS");
    } else if (e == SMTP_CONN_TLS) {
        str_copy(p->verify_diag, sizeof p->verify_diag, diag);
        smtp_conn_open(&p->cfg, (struct sockaddr *)&p->sa, p->salen, p->name,
                       SMTP_CLIENT_TLS_ENCRYPT, ready_encrypt, p);
    } else {
        finish(p, NULL, SMTP_TLS_UNREACHABLE, e, diag);
    }
}

void smtp_tls_probe(const struct smtp_client_config *cfg, const struct sockaddr *sa,
                    socklen_t salen, const char *name, smtp_tls_probe_cb cb, void *arg)
{
    struct tls_probe *p = xcalloc(1, sizeof *p);
    p->cfg = *cfg;
    memcpy(&p->sa, sa, salen);
    p->salen = salen;
    str_copy(p->name, sizeof p->name, name);
    p->cb = cb;
    p->arg = arg;
    smtp_conn_open(&p->cfg, (struct sockaddr *)&p->sa, p->salen, p->name, SMTP_CLIENT_TLS_VERIFY,
                   ready_verify, p);
}
