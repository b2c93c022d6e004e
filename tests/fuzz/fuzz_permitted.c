/*
 * fuzz_permitted.c - libFuzzer target for what permitted senders read from
 * the network or an upload: the header block of an outbound message
 * (auto-reply markers, In-Reply-To / References for the held-mail hook,
 * src/policy/permitted_learn.c), a permitted-sender value (the CSV import
 * and the API, store_permitted_normalise), and the greylist triplet key
 * built from a client address and envelope addresses.
 * Invariants: nothing is read beyond the input; a normalised value is
 * lower-case ASCII where ASCII, NUL-terminated within its bound, and a
 * second normalisation leaves it unchanged; a triplet key fits its buffer.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "policy/greylist.h"
#include "policy/permitted.h"
#include "store/store.h"

static bool any_id(void *arg, const char *msgid)
{
    size_t n = strlen(msgid);
    if (n < 2 || msgid[0] != '<' || msgid[n - 1] != '>')
        abort();
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the header block, not NUL-terminated: a copy of exactly size octets */
    char *head = malloc(size ? size : 1);
    if (head == NULL)
        return 0;
    memcpy(head, data, size);
    const char *why = NULL;
    if (permitted_learn_autoreply(head, size, &why) && why == NULL)
        abort();
    permitted_learn_set_released_hook(any_id, NULL);
    (void)permitted_learn_released_reply(head, size);
    free(head);

    /* a value and a triplet: C strings */
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char out[STORE_PERMITTED_VALUE_MAX + 1], again[STORE_PERMITTED_VALUE_MAX + 1];
    struct error err = {0};
    if (store_permitted_normalise(s, "value", out, sizeof out, &err) == 0) {
        if (strnlen(out, sizeof out) >= sizeof out)
            abort();
        for (const char *p = out; *p; p++)
            if (isupper((unsigned char)*p))
                abort();
        if (store_permitted_normalise(out, "value", again, sizeof again, &err) != 0 ||
            strcmp(out, again) != 0)
            abort();
    }
    char key[GREYLIST_KEY_MAX];
    const char *bar = memchr(s, '|', size);
    if (greylist_triplet_key(bar ? bar + 1 : "192.0.2.1", s, s, key, sizeof key) == 0 &&
        strnlen(key, sizeof key) >= sizeof key)
        abort();
    free(s);
    return 0;
}
