/* main.c — the kiln command: dispatches to a subcommand and is the one place that
 * prints user errors (the subcommands collect them as diagnostics). */
#include <stdio.h>
#include <string.h>

#include "driver.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv, kiln_diags *diags);
    const char *usage;
} command;

static const command commands[] = {
    {"check", cmd_check, "kiln check MODEL.json [-D N=V]... [--train [--checkpoint-activations]] [--json] [--dump-ir]"},
    {"init", cmd_init, "kiln init MODEL.json -o W.safetensors [--seed S] [-D N=V]..."},
    {"run", cmd_run,
     "kiln run MODEL.json --weights W.safetensors --inputs X.safetensors --out Y.safetensors [--grads] "
     "[--interp] [--threads N] [-D N=V]..."},
    {"train", cmd_train,
     "kiln train MODEL.json --data PATH [--val PATH] [--task clm|mlm|classify|pairs|seq2seq|span] [--steps N] "
     "[--batch B] [--init W.safetensors] [--save CKPT.safetensors] [--resume CKPT.safetensors] [--log METRICS.jsonl] "
     "[--threads N] [--seed S] [--val-every N] [--val-batches N] [--save-every N] [--stop-at S] [--checkpoint-activations] [-D N=V]..."},
    {"eval", cmd_eval, "kiln eval MODEL.json --weights W.safetensors --data PATH [--task T] [--batch B] [-D N=V]..."},
    {"generate", cmd_generate,
     "kiln generate MODEL.json --weights W.safetensors (--prompt TEXT | --source TEXT) [--max-new N] [--temperature T | --greedy] "
     "[--top-k K] [--top-p P] [--seed S] [--truncate] [--json] [--no-cache] [--stats] [--threads N] [-D N=V]..."},
    {"compile", cmd_compile,
     "kiln compile MODEL.json -o OUT.so|OUT.o|OUT.a [--header OUT.h] [--target-cpu CPU] "
     "[--target-features F] [--emit ir|llvm|asm|dot] [--train [--checkpoint-activations]] [-D N=V]..."},
    {"bench", cmd_bench, "kiln bench MODEL.json [-D N=V]... [--interp] [--iters N] [--json] [--train [--checkpoint-activations]] [--threads N]"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(out, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        kiln_diags diags;
        kiln_diags_init(&diags);
        int status = commands[i].run(argc, argv, &diags);
        fflush(stdout);
        if (diags.n) {
            fprintf(stderr, "kiln %s: ", commands[i].name);
            fprintf(stderr, diags.n == 1 ? "1 error\n" : "%d errors\n", diags.n);
            kiln_diags_print(&diags, stderr);
            if (status == EXIT_USAGE) fprintf(stderr, "usage: %s\n", commands[i].usage);
        }
        if (status == EXIT_OK && diags.n) status = EXIT_FAIL;
        kiln_diags_free(&diags);
        return status;
    }
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
