/*
 * fuzz_dkim_tags.c - libFuzzer target for the DKIM tag=value parser
 * (dkim_tags_parse in src/deliver/deliver_dkim_key.c), which reads TXT
 * records published in DNS, and for dkim_record_matches and the header
 * From parser on the same input.  Invariants: every tag lies inside the
 * input, names are non-empty, at most DKIM_TAGS_MAX tags, no duplicates,
 * and the explanations are NUL-terminated within their buffers.  The
 * Ed25519 signer's relaxed canonicalisation (message text from the
 * network) gets the same bytes as a body and as a header field.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "deliver/deliver_dkim_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    static struct dkim_tags tags;
    char why[128];
    if (dkim_tags_parse(p, size, &tags, why, sizeof why) == 0) {
        if (tags.n > DKIM_TAGS_MAX)
            abort();
        for (size_t i = 0; i < tags.n; i++) {
            const struct dkim_tag *t = &tags.t[i];
            if (t->name_len == 0 || t->name < p || t->name + t->name_len > p + size ||
                (t->value_len > 0 && (t->value < p || t->value + t->value_len > p + size)))
                abort();
            for (size_t j = 0; j < i; j++)
                if (tags.t[j].name_len == t->name_len &&
                    memcmp(tags.t[j].name, t->name, t->name_len) == 0)
                    abort();
        }
    } else if (strlen(why) >= sizeof why) {
        abort();
    }
    /* the same bytes as a NUL-terminated published record, and as a header section */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char why2[256], dom[256];
    int m = dkim_record_matches(s, "MCowBQYDK2VwAyEA", "ed25519", why2, sizeof why2);
    if ((m != 0 && m != 1) || strlen(why2) >= sizeof why2)
        abort();
    if (dkim_header_from_domain(s, size, dom, sizeof dom) == 0 && strlen(dom) >= sizeof dom)
        abort();
    free(s);
    struct dkim_body b;
    unsigned char digest[32];
    dkim_body_init(&b);
    dkim_body_update(&b, data, size / 2);
    dkim_body_update(&b, data + size / 2, size - size / 2);
    dkim_body_final(&b, digest);
    struct buf h;
    buf_init(&h);
    dkim_relaxed_header(p, size, &h);
    if (h.len > size + 1)   /* canonicalisation never grows a field, bar the ':' */
        abort();
    buf_free(&h);
    return 0;
}
