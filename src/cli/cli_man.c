/*
 * cli_man.c - the moat(1) manual page, written from the command table of
 * moat.c (`moat --man`; issue 11): every command with its synopsis, help
 * and options, so the page cannot fall behind the program.  A command or
 * option without help text is named on stderr and fails the page (the
 * man test in tests/man/ then fails).
 *
 * Entry point: cli_write_man (cli.h).
 */
#include <string.h>
#include "cli.h"
#include "core/roff.h"

/* man_synopsis - "moat NOUN VERB ARGS" in bold, then the options' synopsis */
static void man_synopsis(FILE *out, const struct cli_command *c)
{
    char head[256];
    xsnprintf(head, sizeof head, "moat %s%s%s", c->noun, c->verb ? " " : "",
              c->verb ? c->verb : "");
    roff_bold(out, head);
    if (c->args[0]) {
        fputs(" \\fI", out);
        for (const char *p = c->args; *p; p++) {
            if (*p == '\\')
                fputs("\\e", out);
            else if (*p == '-')
                fputs("\\-", out);
            else
                fputc(*p, out);
        }
        fputs("\\fR", out);
    }
    for (const struct cli_option *o = c->options; o && o->name; o++) {
        char opt[96];
        xsnprintf(opt, sizeof opt, "--%s", o->name);
        fputs(" [", out);
        roff_bold(out, opt);
        if (o->arg)
            fprintf(out, " \\fI%s\\fR", o->arg);
        fputc(']', out);
    }
    fputc('\n', out);
}

/* man_options - options as a tagged list (indented under a command when
 * nested); the options without help are counted */
static int man_options(FILE *out, const char *cmd, const struct cli_option *opts, bool nested)
{
    int missing = 0;
    if (opts == NULL || opts[0].name == NULL)
        return 0;
    if (nested)
        fputs(".RS\n", out);
    for (const struct cli_option *o = opts; o->name; o++) {
        if (o->help == NULL || o->help[0] == '\0') {
            fprintf(stderr, "moat: option --%s of %s has no help text\n", o->name, cmd);
            missing++;
            continue;
        }
        char opt[96];
        xsnprintf(opt, sizeof opt, "--%s", o->name);
        fputs(".TP\n", out);
        roff_bold(out, opt);
        if (o->arg)
            fprintf(out, " \\fI%s\\fR", o->arg);
        fputc('\n', out);
        roff_text(out, o->help);
    }
    if (nested)
        fputs(".RE\n", out);
    return missing;
}

int cli_write_man(FILE *out, const struct cli_command *cmds, size_t n,
                  const struct cli_option *globals)
{
    int missing = 0;
    roff_header(out, "MOAT", 1, MOAT_VERSION, "moat --man from the command table in "
                "src/cli/moat.c", "moat", "command-line client of the Moat mail gateway");
    fputs(".SH SYNOPSIS\n.B moat\n[\\fB\\-\\-url\\fR \\fIURL\\fR] [\\fB\\-\\-json\\fR] "
          "\\fICOMMAND\\fR [\\fIARGS\\fR] [\\fIOPTIONS\\fR]\n.SH DESCRIPTION\n", out);
    roff_text(out,
        "`moat` manages a running `moatd`(8) through its HTTP API: domains and routes, the "
        "queue, accounts and tokens, settings, the directory, outbound relay, screening, held "
        "mail, the archive. Output is for people by default and JSON with `--json`. Global "
        "options may appear anywhere before `--`; `moat COMMAND --help` shows one command.");
    fputs(".SH GLOBAL OPTIONS\n", out);
    missing += man_options(out, "moat", globals, false);
    fputs(".SH COMMANDS\n", out);
    const char *noun = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct cli_command *c = &cmds[i];
        char name[128];
        xsnprintf(name, sizeof name, "%s%s%s", c->noun, c->verb ? " " : "", c->verb ? c->verb : "");
        if (c->summary == NULL || c->summary[0] == '\0' || c->help == NULL || c->help[0] == '\0') {
            fprintf(stderr, "moat: command \"%s\" has no %s\n", name,
                    c->summary == NULL || c->summary[0] == '\0' ? "summary" : "help text");
            missing++;
            continue;
        }
        if (noun == NULL || strcmp(noun, c->noun) != 0) {
            noun = c->noun;
            fprintf(out, ".SS %s\n", noun);
        }
        fputs(".TP\n", out);
        man_synopsis(out, c);
        roff_text(out, c->help);
        missing += man_options(out, name, c->options, true);
    }
    fputs(".SH ENVIRONMENT\n"
          ".TP\n.B MOAT_URL\nmoatd's API, when \\fB\\-\\-url\\fR is not given\n"
          ".TP\n.B MOAT_TOKEN\nthe API token, over the one in cli.conf\n"
          ".TP\n.B MOAT_CACERT\na CA file to verify moatd's HTTPS certificate with\n"
          ".TP\n.B MOAT_NAME\nthe account \\fBmoat login\\fR signs in as\n"
          ".TP\n.B MOAT_PASSWORD\nits password (else asked on the terminal)\n"
          ".TP\n.B MOAT_NEW_PASSWORD\nthe new password \\fBmoat login\\fR sets when the "
          "account must change its password (else asked on the terminal)\n"
          ".SH FILES\n.TP\n~/.config/moat/cli.conf\nthe API URL and token written by "
          "\\fBmoat login\\fR (in $XDG_CONFIG_HOME/moat/ when that is set)\n"
          ".SH EXIT STATUS\n.TP\n0\nsuccess\n.TP\n1\nthe command failed (the API's message "
          "on stderr)\n.TP\n2\nwrong command line\n"
          ".SH SEE ALSO\n\\fBmoatd\\fR(8), \\fBmoat.conf\\fR(5)\n", out);
    return missing ? -1 : 0;
}
