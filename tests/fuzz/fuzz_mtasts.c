/*
 * fuzz_mtasts.c - libFuzzer target for the MTA-STS parsers
 * (src/deliver/deliver_mtasts.c): the policy document fetched over HTTPS
 * and the TXT record at _mta-sts.<domain>, both read from the network.
 * Invariants: a parsed policy has a known mode, max_age within RFC 8461's
 * bound, mx patterns NUL-terminated within their bound, and (mode other
 * than none) at least one mx; a parsed TXT id is 1..32 alphanumerics.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "deliver/deliver_mtasts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mtasts_policy p;
    char why[200];
    if (mtasts_policy_parse((const char *)data, size, &p, why, sizeof why) == 0) {
        if (p.mode > MTASTS_ENFORCE || p.max_age < 0 || p.max_age > MTASTS_MAX_AGE)
            abort();
        if (p.n_mx > MTASTS_MAX_MX || (p.mode != MTASTS_NONE && p.n_mx == 0))
            abort();
        for (size_t i = 0; i < p.n_mx; i++)
            if (strnlen(p.mx[i], sizeof p.mx[i]) >= sizeof p.mx[i])
                abort();
        (void)mtasts_mx_allowed(&p, "mx.example.com");
    } else if (strnlen(why, sizeof why) >= sizeof why) {
        abort();
    }
    /* the TXT record: a C string, as the resolver hands it over */
    char *txt = malloc(size + 1);
    if (txt == NULL)
        return 0;
    memcpy(txt, data, size);
    txt[size] = '\0';
    char id[MTASTS_ID_MAX];
    if (mtasts_txt_parse(txt, id) == 0) {
        size_t n = strlen(id);
        if (n == 0 || n > 32)
            abort();
        for (size_t i = 0; i < n; i++)
            if (!isalnum((unsigned char)id[i]))
                abort();
    }
    free(txt);
    return 0;
}
