/*
 * roff.h - writing manual pages (man(7) macros): the generated pages
 * moatd(8), moat.conf(5) and moat(1) are written from the tables that
 * define the options, settings and commands, so a page can never disagree
 * with the program.
 */
#ifndef MOAT_ROFF_H
#define MOAT_ROFF_H

#include <stdio.h>

/* roff_text - s as running text on its own line(s): backslashes escaped,
 * a line starting with '.' or '\'' protected, `code` in bold (its '-' as
 * \-, so it can be copied), a blank line as a vertical space (.sp); a newline ends it */
void roff_text(FILE *out, const char *s);
/* roff_bold - s in bold, as in roff_text's code spans, without a newline */
void roff_bold(FILE *out, const char *s);
/* roff_header - a comment naming the generator, .TH, and the NAME
 * section: name \- what */
void roff_header(FILE *out, const char *title, int section, const char *version,
                 const char *generator, const char *name, const char *what);

#endif
