/*
 * fuzz_csv_import.c - libFuzzer target for the CSV user import
 * (directory_csv.c): the RFC 4180 parser and the importer's row checks,
 * without a store.  The first octet picks the chunk size the input is fed
 * in, so records split at every place are exercised; the same input fed
 * whole must give the same report.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "directory/directory.h"

static json_t *run(const uint8_t *data, size_t size, size_t chunk)
{
    struct error err;
    struct directory_import_limits lim = { .max_line = 512, .max_rows = 64 };
    struct directory_import *im = directory_import_new(NULL, &lim, 1, &err);
    if (im == NULL)
        abort();
    for (size_t i = 0; i < size; i += chunk)
        directory_import_feed(im, (const char *)data + i, size - i < chunk ? size - i : chunk);
    json_t *r = directory_import_finish(im, &err);
    directory_import_free(im);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = (size_t)data[0] % 17 + 1;
    data++;
    size--;
    json_t *a = run(data, size, chunk);
    json_t *b = run(data, size, size ? size : 1);
    if ((a == NULL) != (b == NULL) || (a != NULL && !json_equal(a, b)))
        abort();   /* the chunking changed the result */
    json_decref(a);
    json_decref(b);
    return 0;
}
