/*
 * golden.h - golden-file tests of Connect's generated instructions
 * (test_connect_artefacts.c, test_connect_journaling.c): render a task's
 * {steps, artefacts} JSON as text, check it holds no placeholder, and diff
 * it with a file under tests/unit/golden/connect/.  MOAT_GOLDEN_UPDATE=1
 * rewrites the file (review the diff).
 */
#ifndef MOAT_TEST_GOLDEN_H
#define MOAT_TEST_GOLDEN_H

#include <jansson.h>
#include "core/core.h"

#define GOLDEN_DIR MOAT_SOURCE_ROOT "/tests/unit/golden/connect"

/* golden_render - "step: ..." lines, then each artefact between "--- [kind] title" and "---" */
void golden_render(struct buf *b, json_t *j);
/* golden_check - text has no placeholder (<...>, YOUR, CHANGEME) and equals
 * GOLDEN_DIR/name; fails the test naming what otherwise */
void golden_check(const char *text, const char *name, const char *what);

#endif
