/* cmd_compile.c — `kiln compile`: a model's forward pass (and with --train its training step)
 * as a native library for other programs (SPEC section 6), or a look at what would be
 * compiled (--emit).
 *
 *   kiln compile MODEL.json -o OUT.so|OUT.o|OUT.a [--train] [--header OUT.h] [-D N=V]...
 *                [--target-cpu CPU] [--target-features F] [--emit ir|llvm|asm|dot]
 *                [--dot-detail kernels|nodes]
 *
 * The kind of artifact follows -o's extension. The exported entry takes the inputs the
 * outputs need, in the model file's order (a `targets` input only the loss reads is
 * left out, as in SPEC section 6's example). With --train the library also exports
 * NAME_train_step, built from a second load of the model by train_step_build (the graph
 * `kiln train` JIT-compiles, so both compute the same step), taking every model input;
 * dropout's run seed is the model's init.seed, `kiln train`'s default --seed. With --emit
 * and --train the text shows the training step. --emit dot draws the kernel schedule the
 * compiled code follows (dot.c): one box per kernel, or with --dot-detail nodes every
 * node, grouped by kernel. With --emit nothing is built: the text goes
 * to -o when given (written atomically), else to stdout. The work itself is codegen's
 * (aot.c, header.c); this file checks the command line, loads the model and says where
 * the tools and the runtime archive are.
 *
 * The runtime archive (the libc-only loader behind NAME_load) is found through
 * $KILN_EXPORT_RUNTIME, else the path the build configured (KILN_EXPORT_RUNTIME_ARCHIVE);
 * the tools through $KILN_CC (default cc), $KILN_OBJCOPY (objcopy) and $KILN_AR (ar).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "codegen.h"
#include "driver.h"
#include "generate.h"
#include "kernels.h"
#include "train.h"

#ifndef KILN_EXPORT_RUNTIME_ARCHIVE
#define KILN_EXPORT_RUNTIME_ARCHIVE "libkiln_export_runtime.a"
#endif

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

/* SIGINT/SIGTERM while the library is built: remove its .kiln-XXXXXX directory (unlink
 * and rmdir are async-signal-safe), then die of the signal as before. */
static void abandon_on_signal(int sig)
{
    kiln_aot_abandon();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* kiln_aot_write with the signal handlers above in place for its duration. */
static bool write_library(const kiln_compile_request *req, const kiln_aot_options *aot, kiln_diags *diags)
{
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = abandon_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    bool ok = kiln_aot_write(req, aot, diags);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return ok;
}

int cmd_compile(int argc, char **argv, kiln_diags *diags)
{
    const char *out = NULL, *header = NULL, *cpu = NULL, *features = NULL, *emit = NULL, *detail = NULL;
    bool train = false, ckpt = false, generate = false;
    cli_flag flags[] = {
        CLI_PIPELINE_FLAGS,
        {"-o", CLI_STR, &out, NULL,
         "the library to write: .so shared, .o object, .a archive; with --emit, the text's file (default: stdout)"},
        {"--header", CLI_STR, &header, NULL,
         "also write the C header declaring the entry points (default: none)"},
        {"--emit", CLI_STR, &emit, NULL,
         "print kiln IR, optimised LLVM IR, assembly or a Graphviz graph instead of building (default: build)"},
        {"--target-cpu", CLI_STR, &cpu, NULL,
         "CPU to compile for, in LLVM's names, e.g. znver4, x86-64-v3 (default: this machine's)"},
        {"--target-features", CLI_STR, &features, NULL,
         "features to add or remove, such as +avx2,-avx512f; only x86 features kiln supports, never the x86-64 baseline (default: the CPU's features)"},
        {"--train", CLI_BOOL, &train, NULL,
         "also export the training step NAME_train_step; needs the model's losses (default: off)"},
        {"--checkpoint-activations", CLI_BOOL, &ckpt, NULL,
         "with --train: the exported step recomputes block activations (default: off)"},
        {"--generate", CLI_BOOL, &generate, NULL,
         "also export NAME_prefill and NAME_decode_step for KV-cached generation, docs/generation.md (default: off)"},
        {"--dot-detail", CLI_STR, &detail, NULL,
         "with --emit dot: 'kernels' draws one box per kernel, 'nodes' every node grouped by kernel (default: kernels)"},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (!cli_pipeline_valid(diags)) return EXIT_USAGE;
    if (args.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "compile", "expects one MODEL.json");
    kiln_artifact kind = KILN_ARTIFACT_SO;
    if (emit) {
        if (strcmp(emit, "ir") && strcmp(emit, "llvm") && strcmp(emit, "asm") && strcmp(emit, "dot"))
            kiln_diags_add(diags, NULL, 0, 0, "--emit", "'%s' is not one of ir, llvm, asm, dot", emit);
        if (header) kiln_diags_add(diags, NULL, 0, 0, "--header", "only applies to a library, not to --emit");
        if (detail && strcmp(emit, "dot") != 0)
            kiln_diags_add(diags, NULL, 0, 0, "--dot-detail", "only applies to --emit dot");
    } else if (!out) {
        kiln_diags_add(diags, NULL, 0, 0, "compile", "-o OUT.so, OUT.o or OUT.a is required");
    } else if (ends_with(out, ".so")) {
        kind = KILN_ARTIFACT_SO;
    } else if (ends_with(out, ".o")) {
        kind = KILN_ARTIFACT_OBJECT;
    } else if (ends_with(out, ".a")) {
        kind = KILN_ARTIFACT_ARCHIVE;
    } else {
        kiln_diags_add(diags, out, 0, 0, "-o", "unknown kind of output: the name must end in .so, .o or .a");
    }
    if (detail && !emit) kiln_diags_add(diags, NULL, 0, 0, "--dot-detail", "only applies to --emit dot");
    if (detail && strcmp(detail, "kernels") != 0 && strcmp(detail, "nodes") != 0)
        kiln_diags_add(diags, NULL, 0, 0, "--dot-detail", "'%s' is not one of kernels, nodes", detail);
    if (cpu && !*cpu) kiln_diags_add(diags, NULL, 0, 0, "--target-cpu", "is empty");
    else if (cpu) kiln_target_cpu_known(cpu, diags); /* a usage error, before the model is read */
    if (features && !*features) kiln_diags_add(diags, NULL, 0, 0, "--target-features", "is empty");
    else kiln_target_features_check(cpu, features, diags); /* LLVM would warn, crash or stop half-way */
    if (generate && emit)
        kiln_diags_add(diags, NULL, 0, 0, "--generate", "applies to a library (-o OUT.so|.o|.a), not to --emit");
    if (ckpt && !train)
        kiln_diags_add(diags, NULL, 0, 0, "--checkpoint-activations", "applies to the training step: add --train");
    cli_pipeline_runs(KILN_RUNS_COMPILE | (train ? KILN_RUNS_GRADS | KILN_RUNS_STEP : 0), "--train", "--train", diags);
    const cli_file files[] = {{"MODEL.json", args.positional[0], false, NULL},
                              {"-o", out, true, NULL},
                              {"--header", header, true, NULL}};
    cli_files_distinct(files, 3, diags);
    if (diags->n) return EXIT_USAGE;
    const char *runtime = env_or("KILN_EXPORT_RUNTIME", KILN_EXPORT_RUNTIME_ARCHIVE);
    if (!emit && access(runtime, R_OK) != 0) {
        kiln_diags_add(diags, runtime, 0, 0, NULL,
                       "the runtime archive exported libraries link with is missing (build kiln's "
                       "kiln_export_runtime target, or point KILN_EXPORT_RUNTIME at it)");
        return EXIT_FAIL;
    }

    kiln_load_options opt = {args.defines, args.n_defines, NULL, 0, NULL};
    kiln_model model;
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) return EXIT_FAIL;
    const kiln_graph *g = &model.graph;
    int status = EXIT_FAIL;
    char *text = NULL;
    kiln_target target;
    bool have_target = false;
    /* the training step: its own copy of the model, since building it rewrites the graph */
    kiln_model tmodel;
    train_step ts = {0};
    bool have_train = false;
    /* --train: the split step too (trainsplit.c), from two more loads of the model */
    kiln_model smodel[2];
    train_split split = {0};
    bool have_split = false;
    /* --generate: the prefill and decode-step graphs (generate.c) */
    generator gen;
    bool have_gen = false;
    if (generate) {
        size_t len = 0;
        char *model_text = train_read_model_text(args.positional[0], &len, diags);
        have_gen = model_text && generator_graphs(&gen, model_text, len, args.positional[0], args.defines,
                                                  args.n_defines, diags);
        free(model_text);
        if (!have_gen) {
            kiln_model_free(&model);
            return EXIT_FAIL;
        }
    }

    /* the forward entry takes only the inputs its outputs read */
    unsigned char *needed = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    uint32_t *inputs = calloc(model.n_inputs ? (size_t)model.n_inputs : 1, sizeof *inputs);
    KILN_ASSERT(needed && inputs);
    bind_needed(g, false, needed);
    uint32_t n_inputs = 0;
    for (int i = 0; i < model.n_inputs; i++)
        if (needed[model.inputs[i]]) inputs[n_inputs++] = model.inputs[i];

    if (train) {
        if (!kiln_model_load(&tmodel, args.positional[0], &opt, diags)) goto done;
        have_train = true;
        if (!train_step_build(&tmodel, &ts, diags)) goto done;
        kiln_checkpoint_result ck;
        if (ckpt && !train_step_checkpoint(&tmodel, &ts, &ck, diags)) goto done;
        ts.dropout_seed = tmodel.init_seed;
        if (!kiln_model_load(&smodel[0], args.positional[0], &opt, diags)) goto done;
        if (!kiln_model_load(&smodel[1], args.positional[0], &opt, diags)) {
            kiln_model_free(&smodel[0]);
            goto done;
        }
        have_split = true;
        if (!train_split_build(&smodel[0], &smodel[1], ckpt, &split, diags)) goto done;
        split.dropout_seed = tmodel.init_seed;
    }

    if (emit && train && strcmp(emit, "ir") == 0) {
        text = kiln_graph_print(&tmodel.graph);
    } else if (emit && strcmp(emit, "ir") == 0) {
        text = kiln_graph_print(g);
    } else {
        if (!kiln_target_for(&target, cpu, features, diags)) goto done;
        have_target = true;
        kiln_compile_request treq = {0};
        if (train) {
            treq = train_step_request(&tmodel, &ts);
            treq.target = &target;
        }
        kiln_compile_request req = {.g = g,
                                    .inputs = inputs,
                                    .n_inputs = n_inputs,
                                    .params = model.params,
                                    .n_params = (uint32_t)model.n_params,
                                    .name = model.name,
                                    .target = &target,
                                    .pipeline = &cli_pipeline};
        if (cli_pipeline.dump_after) { /* the stage's text first, then the artifact */
            char *dump = kiln_codegen_dump(train ? &treq : &req, diags);
            if (!dump) goto done;
            cli_print_dump(dump);
            free(dump);
        }
        if (emit && strcmp(emit, "dot") == 0) {
            const kiln_compile_request *r = train ? &treq : &req;
            kiln_program prog; /* its schedule is over its graph (simplify rebuilds it) */
            if (!kiln_codegen_program(r, &prog, diags)) goto done;
            text = dot_schedule(prog.g, &prog.sched, detail && strcmp(detail, "nodes") == 0);
            kiln_program_free(&prog);
        } else if (emit && train) {
            text = kiln_codegen_emit(&treq, strcmp(emit, "asm") == 0, diags);
            if (!text) goto done;
        } else if (emit) {
            text = kiln_aot_emit(&req, strcmp(emit, "asm") == 0, diags);
            if (!text) goto done;
        } else {
            kiln_aot_options aot = {.out = out,
                                    .kind = kind,
                                    .header = header,
                                    .source = args.positional[0],
                                    .runtime_archive = runtime,
                                    .cc = env_or("KILN_CC", "cc"),
                                    .objcopy = env_or("KILN_OBJCOPY", "objcopy"),
                                    .ar = env_or("KILN_AR", "ar"),
                                    .train = train ? &treq : NULL};
            kiln_compile_request greq, areq;
            if (train) {
                greq = train_split_grad_request(&split);
                areq = train_split_apply_request(&split);
                greq.target = areq.target = &target;
                aot.train_grad = &greq;
                aot.train_apply = &areq;
                aot.first_grad = split.n_optim_states; /* the gradient area follows the optimizer's states */
            }
            if (generate) {
                gen.prefill.req.target = gen.step.req.target = &target;
                aot.prefill = &gen.prefill.req;
                aot.decode_step = &gen.step.req;
            }
            if (write_library(&req, &aot, diags)) status = EXIT_OK;
            goto done;
        }
    }
    if (out) {
        if (kiln_write_file_atomic(out, text, strlen(text), diags)) status = EXIT_OK;
    } else {
        fputs(text, stdout);
        status = EXIT_OK;
    }

done:
    free(text);
    free(needed);
    free(inputs);
    if (have_target) kiln_target_free(&target);
    if (have_gen) generator_free(&gen);
    if (have_train) {
        train_step_free(&ts);
        kiln_model_free(&tmodel);
    }
    if (have_split) {
        train_split_free(&split);
        kiln_model_free(&smodel[0]);
        kiln_model_free(&smodel[1]);
    }
    kiln_model_free(&model);
    return status;
}
