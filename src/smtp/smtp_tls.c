/*
 * smtp_tls.c - the TLS contexts: the server context for STARTTLS (RFC 3207)
 * and the client context the delivery side uses.
 *
 * Entry points: smtp_tls_server_ctx, smtp_tls_client_ctx (smtp.h).
 *
 * When no certificate is configured (tls_cert and tls_key both empty) the
 * server uses STATE/tls/cert.pem and key.pem, generating a self-signed pair
 * on first start (EC P-256, CN and subjectAltName = hostname, 10 years), so
 * STARTTLS is always offered: opportunistic TLS with an unverified
 * certificate still defeats passive eavesdropping (RFC 7435).  Files are
 * written to a temporary name, fsynced and renamed, then the directory is
 * fsynced: a crash leaves either the old state or the complete new file.
 * The key is created 0600 and never readable by anyone else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include "smtp.h"

/* tls_err - the first queued OpenSSL error as text (the queue is cleared) */
static const char *tls_err(char *dst, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        (void)str_copy(dst, size, "unknown error");
    else
        ERR_error_string_n(e, dst, size);
    ERR_clear_error();
    return dst;
}

/* tls_min_version - settings->tls_min_version to an OpenSSL protocol constant */
static int tls_min_version(const struct moat_settings *s, struct error *err)
{
    const char *v = s->tls_min_version ? s->tls_min_version : "1.2";
    if (strcmp(v, "1.2") == 0 || v[0] == '\0')
        return TLS1_2_VERSION;
    if (strcmp(v, "1.3") == 0)
        return TLS1_3_VERSION;
    error_set(err, "tls_min_version", "tls_min_version must be 1.2 or 1.3, not \"%s\"", v);
    return -1;
}

/* tls_write_pem_atomic - write data produced by fn to path via path.tmp, fsync, rename, fsync dir */
static int tls_write_atomic(const char *dir, const char *path, mode_t mode,
                            int (*fn)(FILE *f, void *arg), void *arg, struct error *err)
{
    char tmp[4096];
    if (xsnprintf(tmp, sizeof tmp, "%s.tmp", path) < 0) {
        error_set(err, "state_dir", "path too long: %s", path);
        return -1;
    }
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        error_set(err, "state_dir", "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        error_set(err, "state_dir", "fdopen %s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = fn(f, arg) == 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        error_set(err, "state_dir", "cannot write %s: %s", path, strerror(errno));
        (void)unlink(tmp);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0)
            log_fatal("event=fsync_failed path=%s error=\"%s\"", dir, strerror(errno));
        close(dfd);
    }
    return 0;
}

static int tls_write_key(FILE *f, void *arg)
{
    return PEM_write_PrivateKey(f, arg, NULL, NULL, 0, NULL, NULL) == 1 ? 0 : -1;
}

static int tls_write_cert(FILE *f, void *arg)
{
    return PEM_write_X509(f, arg) == 1 ? 0 : -1;
}

/* tls_generate_self_signed - a fresh P-256 key and a 10-year self-signed
 * certificate for hostname, written to key_path and cert_path */
static int tls_generate_self_signed(const char *dir, const char *cert_path, const char *key_path,
                                    const char *hostname, struct error *err)
{
    char e[256];
    int rc = -1;
    X509 *x = NULL;
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pkey == NULL) {
        error_set(err, "tls_key", "key generation failed: %s", tls_err(e, sizeof e));
        return -1;
    }
    x = X509_new();
    unsigned char serial[16];
    if (x == NULL || RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f;     /* RFC 5280 4.1.2.2: a positive serial of at most 20 octets */
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL) {
        BN_free(bn);
        goto fail;
    }
    BN_free(bn);
    if (X509_set_version(x, 2) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)3650 * 24 * 3600) == NULL ||
        X509_set_pubkey(x, pkey) != 1)
        goto fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostname,
                                   -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto fail;
    /* subjectAltName: what clients actually match (RFC 6125) */
    unsigned char ipbuf[16];
    bool is_ip = inet_pton(AF_INET, hostname, ipbuf) == 1 || inet_pton(AF_INET6, hostname, ipbuf) == 1;
    char san[300];
    if (xsnprintf(san, sizeof san, "%s:%s", is_ip ? "IP" : "DNS", hostname) < 0)
        goto fail;
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    const struct { int nid; const char *val; } exts[] = {
        { NID_subject_alt_name, san },
        { NID_basic_constraints, "critical,CA:FALSE" },
        { NID_key_usage, "critical,digitalSignature" },
        { NID_ext_key_usage, "serverAuth,clientAuth" },
    };
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].val);
        if (ext == NULL)
            goto fail;
        int ok = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        if (ok != 1)
            goto fail;
    }
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        goto fail;
    /* key first: a cert.pem without its key is never left behind */
    if (tls_write_atomic(dir, key_path, 0600, tls_write_key, pkey, err) < 0 ||
        tls_write_atomic(dir, cert_path, 0644, tls_write_cert, x, err) < 0)
        goto out;
    log_info("event=tls_cert_generated cert=%s hostname=%s", cert_path, hostname);
    rc = 0;
    goto out;
fail:
    error_set(err, "tls_cert", "self-signed certificate generation failed: %s", tls_err(e, sizeof e));
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* tls_ctx_load - certificate chain and key into ctx; the key file must not be
 * readable by group or others (CONVENTIONS.md: secret files) */
static int tls_ctx_load(SSL_CTX *ctx, const char *cert, const char *key, struct error *err)
{
    char e[256];
    struct stat st;
    if (stat(key, &st) < 0) {
        error_set(err, "tls_key", "%s: %s", key, strerror(errno));
        return -1;
    }
    if (st.st_mode & 077) {
        error_set(err, "tls_key", "%s is readable by group or others (chmod 600 it)", key);
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        error_set(err, "tls_cert", "%s: %s", cert, tls_err(e, sizeof e));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        error_set(err, "tls_key", "%s: %s", key, tls_err(e, sizeof e));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        error_set(err, "tls_key", "%s does not match %s: %s", key, cert, tls_err(e, sizeof e));
        return -1;
    }
    return 0;
}

SSL_CTX *smtp_tls_server_ctx(const struct moat_settings *s, const char *hostname, struct error *err)
{
    char e[256];
    int minv = tls_min_version(s, err);
    if (minv < 0)
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        error_set(err, "tls_cert", "SSL_CTX_new: %s", tls_err(e, sizeof e));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, minv);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);   /* many idle sessions, small memory */
    static const unsigned char sid_ctx[] = "moat-smtp";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);

    bool have_cert = s->tls_cert && s->tls_cert[0];
    bool have_key = s->tls_key && s->tls_key[0];
    if (have_cert != have_key) {
        error_set(err, have_cert ? "tls_key" : "tls_cert", "tls_cert and tls_key must be set together");
        goto fail;
    }
    if (have_cert) {
        if (tls_ctx_load(ctx, s->tls_cert, s->tls_key, err) < 0)
            goto fail;
        return ctx;
    }
    char dir[4096], cert[4200], key[4200];
    if (xsnprintf(dir, sizeof dir, "%s/tls", s->state_dir ? s->state_dir : ".") < 0 ||
        xsnprintf(cert, sizeof cert, "%s/cert.pem", dir) < 0 ||
        xsnprintf(key, sizeof key, "%s/key.pem", dir) < 0) {
        error_set(err, "state_dir", "state_dir path too long");
        goto fail;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        error_set(err, "state_dir", "cannot create %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (access(cert, R_OK) < 0 || access(key, R_OK) < 0) {
        if (tls_generate_self_signed(dir, cert, key, hostname, err) < 0)
            goto fail;
    }
    if (tls_ctx_load(ctx, cert, key, err) < 0)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *smtp_tls_client_ctx(const struct moat_settings *s, struct error *err)
{
    char e[256];
    int minv = tls_min_version(s, err);
    if (minv < 0)
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        error_set(err, "tls", "SSL_CTX_new: %s", tls_err(e, sizeof e));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, minv);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (s->tls_ca_file && s->tls_ca_file[0]) {
        /* tls_ca_file replaces the system store (a private CA, tests) */
        if (SSL_CTX_load_verify_locations(ctx, s->tls_ca_file, NULL) != 1) {
            error_set(err, "tls_ca_file", "cannot load the CA file %s: %s", s->tls_ca_file,
                      tls_err(e, sizeof e));
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        error_set(err, "tls", "cannot load the system trust store: %s", tls_err(e, sizeof e));
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* The chain is always verified, but the handshake does not fail on a bad
     * one: the caller reads SSL_get_verify_result() and applies the TLS
     * policy of the destination (opportunistic delivery must still work with
     * a self-signed peer, RFC 7435), or sets SSL_VERIFY_PEER per connection. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* DANE (RFC 7672) is enabled per connection (smtp_conn_open_dane); the
     * context's part is done once here, before any thread shares it */
    if (SSL_CTX_dane_enable(ctx) <= 0) {
        error_set(err, "tls", "cannot enable DANE: %s", tls_err(e, sizeof e));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
