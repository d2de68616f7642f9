/* cli.h — command-line parsing for the kiln subcommands.
 *
 * Each subcommand declares its flags in a table; cli_parse fills them, collects
 * positional arguments and -D NAME=N definitions, and reports every problem (unknown
 * flag, missing or malformed value) as a diagnostic. Numbers are parsed strictly: "12x",
 * "", " 5", "+8" or an out-of-range value is an error, never silently truncated. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"
#include "frontend.h"
#include "passes.h"

/* CLI_STRS: a repeatable flag; out is a cli_strs* collecting every value in order. */
typedef enum cli_kind { CLI_BOOL, CLI_STR, CLI_INT, CLI_NUM, CLI_STRS } cli_kind;

typedef struct cli_strs {
    const char *v[16];
    int n;
} cli_strs;

typedef struct cli_flag {
    const char *name;   /* "--out" */
    cli_kind kind;
    void *out;          /* bool*, const char**, int64_t*, double*, cli_strs* */
    bool *given;        /* optional: set when the flag appears */
    const char *help;   /* one line for `kiln CMD --help`: what it does, and its default */
} cli_flag;

typedef struct cli_args {
    const char *positional[32];
    int n_positional;
    kiln_dim_binding defines[64];
    int n_defines;
} cli_args;

/* Parses argv[first..argc). Returns false if anything was wrong (all reported).
 * With --help (or -h) anywhere it parses nothing: it prints the help (cli_print_help
 * with cli_usage), sets cli_help_shown and returns false, so every command's usual
 * "if (!cli_parse(…)) return EXIT_USAGE;" stops it and main turns that into status 0. */
bool cli_parse(int argc, char **argv, int first, const cli_flag *flags, int n_flags, cli_args *args,
               kiln_diags *diags);

/* An integer: decimal digits, optionally after a '-' (whether a negative value makes
 * sense is the flag's own check), within int64_t; nothing before or after them. */
bool cli_parse_int(const char *s, int64_t *out);

/* The running command's usage line (set by main.c before the command runs). */
extern const char *cli_usage;
/* Set by cli_parse when it printed the help. */
extern bool cli_help_shown;

/* --threads N, as every command that runs compiled code takes it: the flag's row (its
 * help states the command's default), the range check (outside 1..1024 a usage error,
 * reported), and the runtime pool's size (at most KILN_MAX_THREADS used; the pool runs
 * everything inline when it cannot start threads). */
#define THREADS_FLAG(var, help) {"--threads", CLI_INT, &(var), NULL, help}
void cli_threads_check(int64_t threads, kiln_diags *diags);
void cli_threads_use(int64_t threads);

/* The compiler pipeline's options for this run (passes/pipeline.c), set by the flags
 * every compiling command takes: --disable-pass NAME[,NAME…] and --dump-after NAME.
 * Their help (NULL here) is written by cli_print_help from the pipeline's table of
 * stages, the one the names are checked against. */
extern kiln_pipeline_options cli_pipeline;
#define CLI_PIPELINE_FLAGS                                                                                    \
    {"--disable-pass", CLI_STR, &cli_pipeline.disable, NULL, NULL},                                           \
    {"--dump-after", CLI_STR, &cli_pipeline.dump_after, NULL, NULL}
/* Checks the stage names those flags gave; false (reported) if one is unknown. */
bool cli_pipeline_valid(kiln_diags *diags);
/* A --dump-after or --disable-pass stage that this command's compilation will not run is
 * a usage error (reported, false, one diagnostic per such stage). `runs` is what it compiles (KILN_RUNS_* of passes.h: 0 for the
 * interpreter); grads_flag and step_flag name the flags that would add gradients or a
 * training step ("--grads", "--train"), NULL when the command has none. */
bool cli_pipeline_runs(unsigned runs, const char *grads_flag, const char *step_flag, kiln_diags *diags);
/* Prints a --dump-after text (if any) to stdout. */
void cli_print_dump(const char *dump);

/* One file a command reads or writes, for cli_files_distinct. */
typedef struct cli_file {
    const char *flag;     /* "--save", or "MODEL.json" for a positional argument */
    const char *path;     /* NULL: not given */
    bool output;
    const char *may_be;   /* a flag that may name the same file (train's --resume and --save), or NULL */
} cli_file;
/* Refuses an output that is the same file as another output or as an input of the
 * command, before anything is written: one diagnostic per such pair, naming both flags
 * (a usage error). Files are the same when they are one inode (stat's st_dev and
 * st_ino) or, while they do not exist yet, their paths are the same once normalised
 * (realpath of the directory, then the name). Files that exist but are not regular
 * (/dev/null, /dev/stdout, a FIFO) are not compared. */
bool cli_files_distinct(const cli_file *files, int n, kiln_diags *diags);

#endif
