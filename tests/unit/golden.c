/*
 * golden.c - see golden.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "golden.h"

void golden_render(struct buf *b, json_t *j)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "steps"), i, v)
        buf_printf(b, "step: %s\n", json_string_value(v));
    json_array_foreach(json_object_get(j, "artefacts"), i, v) {
        buf_printf(b, "--- [%s] %s\n", json_string_value(json_object_get(v, "kind")),
                   json_string_value(json_object_get(v, "title")));
        buf_append_str(b, json_string_value(json_object_get(v, "content")));
        buf_printf(b, "---\n");
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b;
    buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    char *s = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

void golden_check(const char *text, const char *name, const char *what)
{
    /* never a placeholder the administrator must edit */
    assert_null(strstr(text, "<"));
    assert_null(strstr(text, "YOUR"));
    assert_null(strstr(text, "CHANGEME"));
    char path[512];
    snprintf(path, sizeof path, "%s/%s", GOLDEN_DIR, name);
    if (getenv("MOAT_GOLDEN_UPDATE")) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
    char *want = slurp(path);
    if (want == NULL)
        fail_msg("missing golden file %s (MOAT_GOLDEN_UPDATE=1 writes it)", path);
    if (strcmp(want, text) != 0) {
        fprintf(stderr, "---- got\n%s---- end\n", text);
        fail_msg("%s differ from %s", what, path);
    }
    free(want);
}
