/* cli.c — see cli.h. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln/runtime.h" /* kiln_threads_set, KILN_MAX_THREADS */

bool cli_parse_int(const char *s, int64_t *out)
{
    /* plain decimal digits, optionally after a '-': strtoll alone would also take leading
     * white space and a '+' (" 5", "+8"), which a command line should not */
    if (!s) return false;
    const char *d = *s == '-' ? s + 1 : s;
    if (!*d) return false;
    for (const char *p = d; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno) return false;
    *out = v;
    return true;
}

static bool cli_parse_num(const char *s, double *out)
{
    /* strtod's forms (1e-3, .5, -2) but not its leading white space or '+', and only a
     * finite value ("nan", "inf", or 1e999 overflowing to it, are refused) */
    if (!s || !*s || *s == '+' || isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool valid_dim_name(const char *s, size_t n)
{
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static void add_define(const char *text, cli_args *args, kiln_diags *d)
{
    const char *eq = text ? strchr(text, '=') : NULL;
    int64_t v;
    if (!eq || !valid_dim_name(text, (size_t)(eq - text)) || !cli_parse_int(eq + 1, &v) || v < 0) {
        kiln_diags_add(d, NULL, 0, 0, "-D", "expected NAME=N with N a non-negative integer, got '%s'",
                       text ? text : "");
        return;
    }
    if (args->n_defines == (int)(sizeof args->defines / sizeof args->defines[0])) {
        kiln_diags_add(d, NULL, 0, 0, "-D", "too many definitions");
        return;
    }
    /* the name is a prefix of argv, which lives as long as the program: cut a copy */
    static char names[64][65];
    int i = args->n_defines++;
    memcpy(names[i], text, (size_t)(eq - text));
    names[i][eq - text] = 0;
    args->defines[i] = (kiln_dim_binding){names[i], v};
}

kiln_pipeline_options cli_pipeline;
const char *cli_usage;
bool cli_help_shown;

/* The word after `flag` in the usage line ("--steps N" → "N"), or NULL when the flag is
 * not there or takes no value there. The flag must stand alone: "--val" is not found in
 * "--val-every". */
static bool usage_metavar(const char *usage, const char *flag, char *buf, size_t size)
{
    size_t n = strlen(flag);
    for (const char *p = usage ? strstr(usage, flag) : NULL; p; p = strstr(p + 1, flag)) {
        bool starts = p == usage || p[-1] == ' ' || p[-1] == '[' || p[-1] == '(';
        if (!starts || p[n] != ' ') continue;
        const char *v = p + n + 1;
        if (*v == '-' || *v == '[' || *v == 0) return false;
        /* up to the space, less the closing brackets of the usage's own [ ] and ( ) ("N]" →
         * "N", "NAME[,NAME...]]..." → "NAME[,NAME...]", "(--a X | --b TEXT)" → "TEXT") */
        size_t len = strcspn(v, " ");
        for (;;) {
            int depth = 0, paren = 0;
            for (size_t i = 0; i < len; i++) {
                depth += v[i] == '[' ? 1 : v[i] == ']' ? -1 : 0;
                paren += v[i] == '(' ? 1 : v[i] == ')' ? -1 : 0;
            }
            if ((depth >= 0 && paren >= 0) || len == 0) break;
            len--;
        }
        snprintf(buf, size, "%.*s", (int)len, v);
        return true;
    }
    return false;
}

static void help_line(FILE *out, const char *left, const char *help)
{
    if (strlen(left) <= 28) fprintf(out, "  %-28s  %s\n", left, help);
    else fprintf(out, "  %s\n  %-28s  %s\n", left, "", help);
}

/* `kiln CMD --help`: the usage line, then one line per flag: the flag, its value's name
 * (the word after it in the usage line, else N, X or VALUE by kind), its help. -D is
 * listed when the usage line mentions it. */
static void cli_print_help(FILE *out, const char *usage, const cli_flag *flags, int n_flags)
{
    fprintf(out, "usage: %s\n\noptions:\n", usage ? usage : "kiln COMMAND");
    /* the command's own flags first, the compiler pipeline's (shared) after them */
    for (int i = 0; i < 2 * n_flags; i++) {
        const cli_flag *f = &flags[i % n_flags];
        bool shared = f->out == &cli_pipeline.disable || f->out == &cli_pipeline.dump_after;
        if (shared != (i >= n_flags)) continue;
        char meta[64], left[128];
        if (f->kind != CLI_BOOL && !usage_metavar(usage, f->name, meta, sizeof meta))
            snprintf(meta, sizeof meta, "%s", f->kind == CLI_INT ? "N" : f->kind == CLI_NUM ? "X" : "VALUE");
        snprintf(left, sizeof left, "%s%s%s", f->name, f->kind == CLI_BOOL ? "" : " ", f->kind == CLI_BOOL ? "" : meta);
        char help[512], list[256];
        if (f->out == &cli_pipeline.disable) { /* the stage names come from the pipeline's table */
            kiln_pass_list(list, sizeof list, true, ", ");
            snprintf(help, sizeof help, "turn off optional compiler stages: %s; same outputs within rounding "
                     "(default: all on)", list);
        } else if (f->out == &cli_pipeline.dump_after) {
            kiln_pass_list(list, sizeof list, false, " or ");
            snprintf(help, sizeof help, "print the IR after a stage: %s (default: none)", list);
        } else {
            snprintf(help, sizeof help, "%s", f->help ? f->help : "");
        }
        help_line(out, left, help);
    }
    if (usage && strstr(usage, "-D "))
        help_line(out, "-D NAME=N", "bind the model's dim NAME to N; repeatable, overrides the model and inputs");
    help_line(out, "-h, --help", "print this help and exit");
}

/* "a,b" from a and b, kept until the next call (--disable-pass given more than once). */
static const char *join_list(const char *a, const char *b)
{
    static char *joined;
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    KILN_ASSERT(s != NULL);
    memcpy(s, a, na);
    s[na] = ',';
    memcpy(s + na + 1, b, nb + 1);
    free(joined); /* a itself, when it was the previous join */
    joined = s;
    return s;
}

bool cli_parse(int argc, char **argv, int first, const cli_flag *flags, int n_flags, cli_args *args,
               kiln_diags *diags)
{
    int errors = diags->n;
    memset(args, 0, sizeof *args);
    bool seen[128] = {false}; /* by flag: a single-valued flag given twice is an error */
    KILN_ASSERT(n_flags <= 128);
    for (int i = first; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_print_help(stdout, cli_usage, flags, n_flags);
            cli_help_shown = true;
            return false;
        }
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-D") == 0) {
            add_define(i + 1 < argc ? argv[++i] : NULL, args, diags);
            continue;
        }
        if (strncmp(a, "-D", 2) == 0) {
            add_define(a + 2, args, diags);
            continue;
        }
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (args->n_positional == (int)(sizeof args->positional / sizeof args->positional[0]))
                kiln_diags_add(diags, NULL, 0, 0, a, "unexpected argument");
            else args->positional[args->n_positional++] = a;
            continue;
        }
        const cli_flag *f = NULL;
        for (int j = 0; j < n_flags; j++)
            if (strcmp(flags[j].name, a) == 0) f = &flags[j];
        if (!f) {
            const char *names[64];
            int n = 0;
            for (int j = 0; j < n_flags && n < 64; j++) names[n++] = flags[j].name;
            const char *near = kiln_closest_name(a, names, n);
            if (near) kiln_diags_add(diags, NULL, 0, 0, a, "unknown option for this command; did you mean %s?", near);
            else kiln_diags_add(diags, NULL, 0, 0, a, "unknown option for this command");
            continue;
        }
        if (f->given) *f->given = true;
        if (f->kind == CLI_BOOL) {
            *(bool *)f->out = true;
            continue;
        }
        if (i + 1 >= argc) {
            kiln_diags_add(diags, NULL, 0, 0, a, "needs a value");
            continue;
        }
        const char *v = argv[++i];
        bool again = seen[f - flags];
        seen[f - flags] = true;
        if (again && f->out == &cli_pipeline.disable) { /* a list: both values count */
            v = join_list(cli_pipeline.disable, v);
        } else if (again && f->kind != CLI_STRS) {
            kiln_diags_add(diags, NULL, 0, 0, a, "given twice (it takes one value)");
            continue;
        }
        switch (f->kind) {
        case CLI_STR: *(const char **)f->out = v; break;
        case CLI_INT:
            if (!cli_parse_int(v, f->out)) kiln_diags_add(diags, NULL, 0, 0, a, "expected an integer, got '%s'", v);
            break;
        case CLI_NUM:
            if (!cli_parse_num(v, f->out)) kiln_diags_add(diags, NULL, 0, 0, a, "expected a number, got '%s'", v);
            break;
        case CLI_STRS: {
            cli_strs *list = f->out;
            if (list->n == (int)(sizeof list->v / sizeof list->v[0]))
                kiln_diags_add(diags, NULL, 0, 0, a, "given more than %d times", list->n);
            else list->v[list->n++] = v;
            break;
        }
        default: break;
        }
    }
    return diags->n == errors;
}

void cli_threads_check(int64_t threads, kiln_diags *diags)
{
    if (threads < 1 || threads > 1024) kiln_diags_add(diags, NULL, 0, 0, "--threads", "expected 1..1024");
}

void cli_threads_use(int64_t threads)
{
    kiln_threads_set((int)(threads < KILN_MAX_THREADS ? threads : KILN_MAX_THREADS)); /* inline on failure */
}

static bool stages_known(const char *list, const char *flag, bool disabling, kiln_diags *diags)
{
    bool ok = true;
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        if (!kiln_pass_known(name)) {
            kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is not a pass (passes: %s)", name, kiln_pass_names());
            ok = false;
        } else if (disabling && !kiln_pass_optional(name)) {
            kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' cannot be turned off: code cannot be compiled without it",
                           name);
            ok = false;
        }
        if (!end) break;
        p = end + 1;
    }
    return ok;
}

bool cli_pipeline_valid(kiln_diags *diags)
{
    bool ok = stages_known(cli_pipeline.disable, "--disable-pass", true, diags);
    if (cli_pipeline.dump_after && strchr(cli_pipeline.dump_after, ',')) {
        kiln_diags_add(diags, NULL, 0, 0, "--dump-after", "names one pass");
        ok = false;
    }
    return stages_known(cli_pipeline.dump_after, "--dump-after", false, diags) && ok;
}

/* One stage named by `flag` (--dump-after or --disable-pass): false (reported) when the
 * compilation described by `runs` does not run it. */
static bool stage_runs(const char *flag, const char *stage, unsigned runs, const char *grads_flag,
                       const char *step_flag, kiln_diags *diags)
{
    unsigned missing = kiln_pass_needs(stage) & ~runs;
    if (!missing) return true;
    if (missing & KILN_RUNS_COMPILE)
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' does not run: the interpreter compiles nothing", stage);
    else if (missing & KILN_RUNS_GRADS && grads_flag)
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is a training stage: add %s", stage, grads_flag);
    else if (step_flag)
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is a training stage: add %s", stage, step_flag);
    else if (grads_flag && strcmp(flag, "--dump-after") == 0)
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is a stage of a whole training step, which %s does "
                       "not compile (kiln check --train --dump-after %s shows it)", stage, grads_flag, stage);
    else if (grads_flag)
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is a stage of a whole training step, which %s does "
                       "not compile", stage, grads_flag);
    else
        kiln_diags_add(diags, NULL, 0, 0, flag, "'%s' is a training stage: this command compiles no "
                       "training step", stage);
    return false;
}

bool cli_pipeline_runs(unsigned runs, const char *grads_flag, const char *step_flag, kiln_diags *diags)
{
    bool ok = true;
    if (cli_pipeline.dump_after)
        ok = stage_runs("--dump-after", cli_pipeline.dump_after, runs, grads_flag, step_flag, diags);
    for (const char *p = cli_pipeline.disable; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        ok = stage_runs("--disable-pass", name, runs, grads_flag, step_flag, diags) && ok;
        if (!end) break;
        p = end + 1;
    }
    return ok;
}

void cli_print_dump(const char *dump)
{
    if (dump) fputs(dump, stdout);
}

/* What makes a file itself: its inode when it exists, else its normalised path. */
typedef struct file_id {
    bool exists, regular;
    struct stat st;
    char path[PATH_MAX + 256];
} file_id;

static void file_identify(const char *path, file_id *id)
{
    memset(id, 0, sizeof *id);
    if (stat(path, &id->st) == 0) {
        id->exists = true;
        id->regular = S_ISREG(id->st.st_mode);
        return;
    }
    /* not there yet: the real directory plus the name ("./a.st", "dir/../a.st" and the
     * absolute path of a.st are one file) */
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char dir[PATH_MAX], real[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 1, slash ? path : ".");
    if (realpath(dir, real)) snprintf(id->path, sizeof id->path, "%s/%s", strcmp(real, "/") ? real : "", base);
    else snprintf(id->path, sizeof id->path, "%s", path);
}

static bool file_same(const file_id *a, const file_id *b)
{
    if (a->exists != b->exists) return false;
    if (a->exists) return a->regular && b->regular && a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino;
    return strcmp(a->path, b->path) == 0;
}

bool cli_files_distinct(const cli_file *files, int n, kiln_diags *diags)
{
    int before = diags->n;
    file_id *ids = calloc(n > 0 ? (size_t)n : 1, sizeof *ids);
    KILN_ASSERT(ids != NULL);
    for (int i = 0; i < n; i++)
        if (files[i].path) file_identify(files[i].path, &ids[i]);
    for (int i = 0; i < n; i++) {
        const cli_file *f = &files[i];
        if (!f->path || !f->output) continue;
        for (int j = 0; j < n; j++) {
            const cli_file *o = &files[j];
            if (j == i || !o->path || (o->output && j > i) || !file_same(&ids[i], &ids[j])) continue;
            if ((f->may_be && strcmp(f->may_be, o->flag) == 0) || (o->may_be && strcmp(o->may_be, f->flag) == 0))
                continue;
            if (o->output)
                kiln_diags_add(diags, f->path, 0, 0, f->flag, "is the same file as %s (%s): each output needs a file "
                               "of its own", o->flag, o->path);
            else
                kiln_diags_add(diags, f->path, 0, 0, f->flag, "is the same file as the input %s (%s): writing it "
                               "would overwrite that input", o->flag, o->path);
        }
    }
    free(ids);
    return diags->n == before;
}
