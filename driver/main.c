/* main.c — the kiln command: dispatches to a subcommand and is the one place that
 * prints user errors (the subcommands collect them as diagnostics).
 *
 * `kiln`, `kiln --help` and `kiln help` list the commands; `kiln CMD --help` and
 * `kiln help CMD` print a command's usage line and one line per flag (cli_parse prints
 * it from the command's own flag table, so the help cannot drift from what is parsed);
 * `kiln --version` prints kiln's version (CMake's project version) and LLVM's. An LLVM
 * fatal error becomes a kiln internal error that first removes a half-built library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codegen.h"
#include "driver.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv, kiln_diags *diags);
    const char *usage;
    const char *summary;
    bool jit; /* compiles through the JIT, with the compile cache (`kiln bench` times compiles: without) */
} command;

#define PIPELINE_USAGE "[--dump-after STAGE] [--disable-pass STAGE[,STAGE...]]"

static const command commands[] = {
    {"check", cmd_check,
     "kiln check MODEL.json [-D N=V]... [--json] [--dump-ir] [--memory] [--train [--checkpoint-activations]] " PIPELINE_USAGE,
     "validate a model; print its dims, parameters, shapes, FLOPs and memory", false},
    {"init", cmd_init, "kiln init MODEL.json -o W.safetensors [--seed S] [-D N=V]...",
     "write fresh weights (the SPEC's init scheme)", false},
    {"run", cmd_run,
     "kiln run MODEL.json --weights W.safetensors --inputs X.safetensors --out Y.safetensors [--grads] "
     "[--interp] [--threads N] [--max-memory BYTES] [-D N=V]... " PIPELINE_USAGE,
     "evaluate the model on inputs (JIT-compiled, or the reference interpreter)", true},
    {"train", cmd_train,
     "kiln train MODEL.json --data PATH [--val PATH] [--task clm|mlm|classify|pairs|seq2seq|span] [--steps N] "
     "[--batch B] [--init W.safetensors] [--save CKPT.safetensors] [--resume CKPT.safetensors] [--log METRICS.jsonl] "
     "[--log-every N] [--threads N] [--seed S] [--val-every N] [--val-batches N] [--save-every N] [--stop-at S] "
     "[--checkpoint-activations] [--on-nonfinite stop|skip|off] [--max-memory BYTES] [--distributed] [--dist-timeout S] "
     "[--dist-serial] [-D N=V]... " PIPELINE_USAGE,
     "train a model on a data file, with checkpoints and exact resume (under mpirun: data-parallel)", true},
    {"eval", cmd_eval, "kiln eval MODEL.json --weights W.safetensors --data PATH [--task T] [--batch B] [--max-memory BYTES] [-D N=V]...",
     "loss and perplexity (or accuracy) of weights on a data file", true},
    {"embed", cmd_embed,
     "kiln embed MODEL.json --weights W.safetensors --input FILE --out E.safetensors [--output NAME] [--normalize] "
     "[--batch B] [--threads N] [--max-memory BYTES] [-D N=V]...",
     "one pooled embedding per line of a text file (a (batch, D) output of the model)", true},
    {"generate", cmd_generate,
     "kiln generate MODEL.json --weights W.safetensors (--prompt TEXT | --source TEXT) [--max-new N] "
     "[--temperature T | --greedy] [--top-k K] [--top-p P] [--seed S] [--truncate] [--json] [--no-cache] [--stats] [--repeat N] "
     "[--threads N] [--max-memory BYTES] [-D N=V]... " PIPELINE_USAGE,
     "write text with a trained model: a compiled prefill and KV-cached decode steps", true},
    {"compile", cmd_compile,
     "kiln compile MODEL.json -o OUT.so|OUT.o|OUT.a [--header OUT.h] [--target-cpu CPU] "
     "[--target-features F] [--emit ir|llvm|asm|dot [--dot-detail kernels|nodes]] [--train [--checkpoint-activations]] [--generate] [-D N=V]... "
     PIPELINE_USAGE,
     "export the model (and its training step or generation) as a C library with a header", false},
    {"bench", cmd_bench,
     "kiln bench MODEL.json [-D N=V]... [--interp] [--iters N] [--json] [--train [--checkpoint-activations]] "
     "[--threads N] [--per-kernel] [--max-memory BYTES] " PIPELINE_USAGE,
     "time the compile and the forward pass (or training step)", false},
    {"plot", cmd_plot,
     "kiln plot METRICS.jsonl... -o CURVE.svg [--y NAME[,NAME...]]... [--log-scale] [--smooth N] [--title TEXT]",
     "draw loss curves from kiln train --log files as an SVG chart", false},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void overview(FILE *out)
{
    fprintf(out, "kiln %s: a graph compiler for neural networks\n\n", KILN_VERSION);
    fprintf(out, "usage: kiln COMMAND [ARGS...]\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-9s %s\n", "help", "kiln help COMMAND (or kiln COMMAND --help): a command's options");
    fprintf(out, "\n  kiln --version    kiln's and LLVM's versions\n");
    fprintf(out, "\nenvironment:\n");
    fprintf(out, "  KILN_CACHE_DIR    where run, train, eval, embed and generate keep compiled machine code\n"
                 "                    (default $XDG_CACHE_HOME/kiln or ~/.cache/kiln; \"off\" turns it off)\n");
    fprintf(out, "  KILN_PERF=1       name the JIT's kernels for perf (writes jit-PID.dump)\n");
}

static const command *find(const char *name)
{
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

/* The compile cache (codegen/objcache.c, docs/cli.md): KILN_CACHE_DIR, else
 * $XDG_CACHE_HOME/kiln, else ~/.cache/kiln; KILN_CACHE_DIR empty or "off": none. A
 * directory the user named that cannot be used is worth a warning; the default one
 * silently leaves the cache off (a read-only home, say). */
static void open_compile_cache(void)
{
    const char *named = getenv("KILN_CACHE_DIR");
    if (named && (!*named || strcmp(named, "off") == 0)) return;
    char dir[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (named) snprintf(dir, sizeof dir, "%s", named);
    else if (xdg && xdg[0] == '/') snprintf(dir, sizeof dir, "%s/kiln", xdg);
    else if (home && home[0] == '/') snprintf(dir, sizeof dir, "%s/.cache/kiln", home);
    else return;
    kiln_diags d;
    kiln_diags_init(&d);
    if (!kiln_objcache_open(dir, &d) && named && d.n)
        fprintf(stderr, "kiln: warning: KILN_CACHE_DIR: %s\n", d.items[0].message);
    kiln_diags_free(&d);
}

static int run(const command *c, int argc, char **argv)
{
    if (c->jit) open_compile_cache();
    kiln_diags diags;
    kiln_diags_init(&diags);
    cli_usage = c->usage;
    int status = c->run(argc, argv, &diags);
    fflush(stdout);
    if (cli_help_shown) {
        kiln_diags_free(&diags);
        return EXIT_OK;
    }
    if (diags.n) {
        fprintf(stderr, "kiln %s: ", c->name);
        fprintf(stderr, diags.n == 1 ? "1 error\n" : "%d errors\n", diags.n);
        kiln_diags_print(&diags, stderr);
        if (status == EXIT_USAGE)
            fprintf(stderr, "usage: %s\n(kiln %s --help describes every option)\n", c->usage, c->name);
    }
    if (status == EXIT_OK && diags.n) status = EXIT_FAIL;
    kiln_diags_free(&diags);
    return status;
}

int main(int argc, char **argv)
{
    kiln_codegen_install_fatal_handler(); /* LLVM's fatal errors: kiln's internal errors */
    if (argc < 2) {
        overview(stderr);
        return EXIT_USAGE;
    }
    const char *a = argv[1];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || (strcmp(a, "help") == 0 && argc == 2)) {
        overview(stdout);
        return EXIT_OK;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "version") == 0) {
        unsigned major, minor, patch;
        kiln_codegen_version(&major, &minor, &patch);
        printf("kiln %s (LLVM %u.%u.%u)\n", KILN_VERSION, major, minor, patch);
        return EXIT_OK;
    }
    if (strcmp(a, "help") == 0) {
        const command *c = find(argv[2]);
        if (!c || argc > 3) {
            fprintf(stderr, "kiln help: %s\n", c ? "expects one COMMAND" : "no such command");
            overview(stderr);
            return EXIT_USAGE;
        }
        char *help_argv[] = {argv[0], argv[2], "--help", NULL};
        return run(c, 3, help_argv);
    }
    const command *c = find(a);
    if (c) return run(c, argc, argv);
    fprintf(stderr, "kiln: unknown command '%s'\n", a);
    overview(stderr);
    return EXIT_USAGE;
}
