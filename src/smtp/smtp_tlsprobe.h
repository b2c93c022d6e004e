/*
 * smtp_tlsprobe.h - classify one SMTP server's STARTTLS, on the event loop:
 *   strict      - the chain is trusted (the client context's trust store:
 *                 tls_ca_file or the system's) and the name matches;
 *   relaxed     - encrypted, but the certificate is not trusted or its name
 *                 does not match (the reason says which);
 *   unsupported - STARTTLS not offered, or the handshake failed (why).
 * A first connection requires verification; when that fails on the
 * certificate a second one encrypts without it.  Used by Connect's inbound
 * and tls_policies checks (routes) and by the outbound TLS policy probes
 * ("tested before enforced"), so the rule is written once.
 */
#ifndef MOAT_SMTP_TLSPROBE_H
#define MOAT_SMTP_TLSPROBE_H

#include "smtp_client.h"

enum smtp_tls_class {
    SMTP_TLS_STRICT = 0,
    SMTP_TLS_RELAXED,
    SMTP_TLS_UNSUPPORTED,
    SMTP_TLS_UNREACHABLE,         /* no SMTP session at all: err and why say why */
};

const char *smtp_tls_class_name(enum smtp_tls_class c);

/* done - c is the ready connection when cls is strict or relaxed (VERIFY or
 * ENCRYPT mode; the receiver quits it or uses it), else NULL; err is the
 * connection error of the last attempt (SMTP_CONN_OK when c is set); why is
 * the reason, for people */
typedef void (*smtp_tls_probe_cb)(void *arg, struct smtp_conn *c, enum smtp_tls_class cls,
                                  enum smtp_conn_error err, const char *why);

/* smtp_tls_probe - start; name is the host name the certificate must match
 * (or an IP literal); cb is called exactly once, later, on the loop */
void smtp_tls_probe(const struct smtp_client_config *cfg, const struct sockaddr *sa,
                    socklen_t salen, const char *name, smtp_tls_probe_cb cb, void *arg);

#endif
