/* cmd_bench.c — `kiln bench`: how long a model takes to compile and to run.
 *
 *   kiln bench MODEL.json [-D N=V]... [--interp] [--iters N] [--json] [--train [--checkpoint-activations]] [--threads N]
 *              [--per-kernel]
 *
 * Design: everything happens in one process with fresh parameters (the model's init
 * scheme and seed) and fixed inputs (every i32 element 1 — a valid token, class and
 * mask value for any model — and every f32 element 0.5), because speed does not depend
 * on the values. Compile time is measured end to end, from reading the model file to a
 * callable entry point, split into the stages codegen reports. The forward pass is run
 * once to warm up, then repeatedly until about two seconds have passed (at least 3 and
 * at most 1000 runs, or exactly --iters); the median and the minimum are reported with
 * the GFLOP/s they give (FLOPs as `kiln check` counts them). --interp times the
 * reference interpreter instead (nothing is compiled).
 *
 * --train times one whole training step instead (forward, backward and the optimizer
 * update of the model's `train` section, as `kiln train` compiles it) at a fixed small
 * learning rate; its FLOPs count every node the loss or an update needs. With
 * --checkpoint-activations the step is the checkpointed one (trainstep.c), and its FLOPs
 * include the recomputed forward nodes.
 *
 * --threads N (default 1, at most KILN_MAX_THREADS used) sizes the runtime's pool.
 *
 * --per-kernel compiles the entry with profiling marks around every kernel call
 * (kiln_compile_request.profile, runtime/profile.c: one monotonic clock read per kernel)
 * and prints, after the usual lines, every kernel's time per run summed over the timed
 * runs (the warm-up excluded), its share of the time inside the entry, its FLOPs and
 * GFLOP/s, sorted by time, described as kernels.c describes them (kind, member ops,
 * type, origin in the model file) with the LLVM function it calls (the name `perf report`
 * shows); before that, the same summed by kind. --json adds them as "per_kernel" and
 * "per_kind".
 */
#include <cjson/cJSON.h>
#include <ffi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "codegen.h"
#include "kiln/runtime.h"
#include "driver.h"
#include "kernels.h"
#include "passes.h"
#include "train.h"
#include "memlimit.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread: what loading and compiling (one thread) cost, which on
 * a machine shared with other jobs the wall clock overstates (--json's compile_cpu_ms). */
static double thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One timed forward pass; false (with a diagnostic) if it failed. */
typedef bool (*run_fn)(void *ctx, kiln_diags *d);

/* Runs `run` once to warm up, then `iters` times (0: about two seconds' worth) and
 * fills times[] (at most 1000), returning how many. */
static int time_runs(run_fn run, void *ctx, int64_t iters, double *times, kiln_diags *d)
{
    if (!run(ctx, d)) return -1;
    kiln_profile_reset(); /* --per-kernel: the warm-up run is not counted */
    int n = 0;
    double start = now_ms();
    while (n < 1000 && (iters ? n < iters : (n < 3 || now_ms() - start < 2000))) {
        double t0 = now_ms();
        if (!run(ctx, d)) return -1;
        times[n++] = now_ms() - t0;
    }
    qsort(times, (size_t)n, sizeof *times, cmp_double);
    return n;
}

/* ---- the compiled forward pass ------------------------------------------------------- */

typedef struct compiled_run {
    kiln_compiled c;
    ffi_cif cif;
    void **args, **arg_ptrs;
} compiled_run;

static bool run_compiled(void *ctx, kiln_diags *d)
{
    compiled_run *r = ctx;
    ffi_arg rc = 0;
    ffi_call(&r->cif, FFI_FN(r->c.entry), &rc, r->arg_ptrs);
    if ((int)rc == KILN_RC_OK) return true;
    kiln_diags_add(d, NULL, 0, 0, "bench", "the compiled model returned status %d", (int)rc);
    return false;
}

/* ---- --per-kernel ---------------------------------------------------------------------- */

typedef struct kernel_row {
    uint32_t k;             /* schedule position; n_kernels = the entry's final copies */
    double ms;              /* per run */
    int64_t flops;
} kernel_row;

static int cmp_row_ms(const void *a, const void *b)
{
    const kernel_row *x = a, *y = b;
    if (x->ms != y->ms) return x->ms > y->ms ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

/* Per kind (loop, or the op of a one-node kernel): summed time, FLOPs and count. */
typedef struct kind_sum {
    char kind[64];
    double ms;
    int64_t flops;
    int n;
} kind_sum;

static int cmp_kind_ms(const void *a, const void *b)
{
    const kind_sum *x = a, *y = b;
    return x->ms != y->ms ? (x->ms > y->ms ? -1 : 1) : strcmp(x->kind, y->kind);
}

static double gflops(int64_t flops, double ms) { return ms > 0 ? flops / ms / 1e6 : 0; }

/* The table (or, with o, the JSON arrays) of the profile collected over `runs` runs;
 * fns[k] is the LLVM function kernel k calls (the name perf shows), or NULL. */
static void per_kernel_report(const kiln_graph *g, const kiln_kernel_schedule *s, char *const *fns, int runs,
                              double mean, cJSON *o)
{
    uint32_t nk = s->n_kernels;
    const int64_t *ns = kiln_profile_ns();
    kernel_row *rows = calloc(nk + 1, sizeof *rows);
    kind_sum *kinds = calloc(nk + 1, sizeof *kinds);
    KILN_ASSERT(rows && kinds && ns);
    double total = 0;
    int n_kinds = 0;
    for (uint32_t k = 0; k <= nk; k++) {
        rows[k] = (kernel_row){k, ns[k] / 1e6 / runs, k < nk ? kernel_flops(g, s, k) : 0};
        total += rows[k].ms;
        if (k == nk) break;
        char kind[64];
        kernel_kind(g, s, k, kind, sizeof kind);
        int i = 0;
        while (i < n_kinds && strcmp(kinds[i].kind, kind) != 0) i++;
        if (i == n_kinds) snprintf(kinds[n_kinds++].kind, sizeof kinds[0].kind, "%s", kind);
        kinds[i].ms += rows[k].ms;
        kinds[i].flops += rows[k].flops;
        kinds[i].n++;
    }
    double copies = rows[nk].ms;
    qsort(rows, nk, sizeof *rows, cmp_row_ms); /* the copies row stays last */
    qsort(kinds, (size_t)n_kinds, sizeof *kinds, cmp_kind_ms);
    double denom = total > 0 ? total : 1;
    char desc[768], text[256];
    if (o) {
        cJSON *arr = cJSON_AddArrayToObject(o, "per_kernel");
        for (uint32_t i = 0; i < nk; i++) {
            uint32_t k = rows[i].k;
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "position", k);
            cJSON_AddStringToObject(r, "function", fns && fns[k] ? fns[k] : "");
            kernel_kind(g, s, k, text, sizeof text);
            cJSON_AddStringToObject(r, "kind", text);
            cJSON_AddNumberToObject(r, "members", s->kernels[k].n);
            kernel_ops(g, s, k, text, sizeof text);
            cJSON_AddStringToObject(r, "ops", text);
            kernel_type(g, s, k, text, sizeof text);
            cJSON_AddStringToObject(r, "type", text);
            kernel_where(g, s, k, text, sizeof text);
            cJSON_AddStringToObject(r, "where", text);
            cJSON_AddNumberToObject(r, "ms", rows[i].ms);
            cJSON_AddNumberToObject(r, "share", rows[i].ms / denom);
            cJSON_AddNumberToObject(r, "flops", (double)rows[i].flops);
            cJSON_AddNumberToObject(r, "gflops", gflops(rows[i].flops, rows[i].ms));
            cJSON_AddItemToArray(arr, r);
        }
        cJSON *karr = cJSON_AddArrayToObject(o, "per_kind");
        for (int i = 0; i < n_kinds; i++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "kind", kinds[i].kind);
            cJSON_AddNumberToObject(r, "kernels", kinds[i].n);
            cJSON_AddNumberToObject(r, "ms", kinds[i].ms);
            cJSON_AddNumberToObject(r, "share", kinds[i].ms / denom);
            cJSON_AddNumberToObject(r, "flops", (double)kinds[i].flops);
            cJSON_AddNumberToObject(r, "gflops", gflops(kinds[i].flops, kinds[i].ms));
            cJSON_AddItemToArray(karr, r);
        }
        cJSON_AddNumberToObject(o, "per_kernel_copies_ms", copies);
        cJSON_AddNumberToObject(o, "per_kernel_total_ms", total);
    } else {
        printf("\nper kernel (%u kernels), averaged over %d runs: %.3f ms per run inside the entry (%.1f%% of the "
               "mean run), %.4f ms of it in the final copies\n",
               nk, runs, total, mean > 0 ? 100 * total / mean : 0, copies);
        printf("\n%-28s %9s %7s %8s %9s\n", "by kind", "ms/run", "share", "kernels", "GFLOP/s");
        for (int i = 0; i < n_kinds; i++)
            printf("%-28s %9.4f %6.2f%% %8d %9.1f\n", kinds[i].kind, kinds[i].ms, 100 * kinds[i].ms / denom,
                   kinds[i].n, gflops(kinds[i].flops, kinds[i].ms));
        printf("\n%5s %9s %7s %6s %9s %8s  %s\n", "#", "ms/run", "share", "cum", "MFLOP", "GFLOP/s",
               "kind  members [ops] type  origin label %node  (function)");
        double cum = 0;
        for (uint32_t i = 0; i < nk; i++) {
            uint32_t k = rows[i].k;
            cum += rows[i].ms;
            kernel_describe(g, s, k, desc, sizeof desc);
            printf("%5u %9.4f %6.2f%% %5.1f%% %9.2f %8.1f  %s", k, rows[i].ms, 100 * rows[i].ms / denom,
                   100 * cum / denom, rows[i].flops / 1e6, gflops(rows[i].flops, rows[i].ms), desc);
            if (fns && fns[k]) printf("  (%s)", fns[k]);
            printf("\n");
        }
        printf("%5s %9.4f %6.2f%% %6s %9s %8s  (entry: output and update copies)\n", "-", copies, 100 * copies / denom,
               "", "", "");
    }
    free(rows);
    free(kinds);
}

/* ---- the interpreter ------------------------------------------------------------------ */

typedef struct interp_run {
    const kiln_graph *g;
    void **values;
} interp_run;

static bool run_interp(void *ctx, kiln_diags *d)
{
    interp_run *r = ctx;
    bool ok = kiln_interp_run(r->g, r->values, false, 0, d);
    kiln_interp_free_values(r->g, r->values); /* the caller's slots stay */
    return ok;
}

int cmd_bench(int argc, char **argv, kiln_diags *diags)
{
    bool interp = false, json = false, train = false, ckpt = false, per_kernel = false, iters_given = false;
    int64_t iters = 0, threads = 1;
    cli_flag flags[] = {
        CLI_PIPELINE_FLAGS,
        LIMITS_FLAG,
        {"--interp", CLI_BOOL, &interp, NULL,
         "time the reference interpreter instead of compiled code (default: compiled)"},
        {"--iters", CLI_INT, &iters, &iters_given,
         "exactly N timed passes, 1..1000, after one warm-up (default: about 2 s worth, at least 3)"},
        {"--json", CLI_BOOL, &json, NULL,
         "print one JSON object instead of text (default: text)"},
        {"--train", CLI_BOOL, &train, NULL,
         "time one whole training step (forward, backward, update) at lr 1e-4 (default: the forward pass)"},
        THREADS_FLAG(threads, "threads for every kernel with enough work, at most 8 used (default: 1)"),
        {"--checkpoint-activations", CLI_BOOL, &ckpt, NULL,
         "with --train: time the checkpointed step, which recomputes activations (default: off)"},
        {"--per-kernel", CLI_BOOL, &per_kernel, NULL,
         "time every kernel: time, share, FLOPs and GFLOP/s per kernel, slowest first (default: off)"},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (!cli_pipeline_valid(diags) || !limits_valid(diags)) return EXIT_USAGE;
    if (args.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "bench", "expects one MODEL.json");
    if (iters_given && (iters < 1 || iters > 1000)) kiln_diags_add(diags, NULL, 0, 0, "--iters", "must be in 1..1000");
    cli_threads_check(threads, diags);
    if (ckpt && !train)
        kiln_diags_add(diags, NULL, 0, 0, "--checkpoint-activations", "applies to the training step: add --train");
    if (diags->n) return EXIT_USAGE;
    if (!(train && interp) && !cli_pipeline_runs((interp ? 0 : KILN_RUNS_COMPILE) |
                                                 (train ? KILN_RUNS_GRADS | KILN_RUNS_STEP : 0), "--train", "--train",
                                                 diags))
        return EXIT_USAGE;
    cli_threads_use(threads);
    if (train && interp) {
        kiln_diags_add(diags, NULL, 0, 0, "--train", "benchmarks the compiled training step; it does not combine with --interp");
        return EXIT_USAGE;
    }
    if (per_kernel && interp) {
        kiln_diags_add(diags, NULL, 0, 0, "--per-kernel", "times compiled kernels; it does not combine with --interp");
        return EXIT_USAGE;
    }

    double t_load = now_ms(), cpu_compile = thread_cpu_ms();
    kiln_load_options opt = {args.defines, args.n_defines, NULL, 0, NULL};
    kiln_model m;
    if (!kiln_model_load(&m, args.positional[0], &opt, diags)) return EXIT_FAIL;
    train_step ts;
    memset(&ts, 0, sizeof ts);
    kiln_checkpoint_result ck;
    if (train && (!train_step_build(&m, &ts, diags) || (ckpt && !train_step_checkpoint(&m, &ts, &ck, diags)))) {
        train_step_free(&ts);
        kiln_model_free(&m);
        return EXIT_FAIL;
    }
    t_load = now_ms() - t_load;
    double cpu_load = thread_cpu_ms() - cpu_compile;
    const kiln_graph *g = &m.graph;
    int status = EXIT_FAIL;
    void *optim = NULL;
    float lr = 1e-4f, loss = 0; /* --train: the lr argument and the loss output */

    /* fresh parameters and fixed inputs, one buffer per PARAM / INPUT node: the
     * parameters alone must fit first */
    int64_t param_bytes = 0;
    for (int i = 0; i < m.n_params; i++) param_bytes += kiln_type_numel(&g->nodes[m.params[i]].type) * KILN_ELEM_BYTES;
    if (!limits_check_blobs(g, param_bytes, 0, 0, 0, "bench", diags)) {
        train_step_free(&ts);
        kiln_model_free(&m);
        return EXIT_FAIL;
    }
    void **values = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *values);
    float **blobs = calloc(m.n_params ? (size_t)m.n_params : 1, sizeof *blobs);
    KILN_ASSERT(values && blobs);
    for (int i = 0; i < m.n_params; i++) {
        blobs[i] = kiln_aligned_alloc((size_t)kiln_type_numel(&g->nodes[m.params[i]].type) * KILN_ELEM_BYTES);
        KILN_ASSERT(blobs[i] != NULL);
        values[m.params[i]] = blobs[i];
    }
    init_params(&m, m.init_seed, blobs);
    for (int i = 0; i < m.n_inputs; i++) {
        const kiln_node *n = &g->nodes[m.inputs[i]];
        int64_t count = kiln_type_numel(&n->type);
        void *buf = kiln_aligned_alloc((size_t)count * KILN_ELEM_BYTES);
        KILN_ASSERT(buf != NULL);
        for (int64_t j = 0; j < count; j++) {
            if (n->type.dtype == KILN_I32) ((int32_t *)buf)[j] = 1;
            else ((float *)buf)[j] = 0.5f;
        }
        values[m.inputs[i]] = buf;
    }

    double *times = calloc(1000, sizeof *times);
    KILN_ASSERT(times != NULL);
    int n_times = -1;
    compiled_run cr;
    memset(&cr, 0, sizeof cr);
    void *params = NULL, *workspace = NULL, **outs = calloc(g->n_outputs + 1, sizeof *outs);
    ffi_type **types = NULL;
    KILN_ASSERT(outs != NULL);
    double t_compile = 0;
    if (interp) {
        interp_run ir = {g, values};
        n_times = time_runs(run_interp, &ir, iters, times, diags);
    } else {
        kiln_compile_request req = {.g = g,
                                    .inputs = m.inputs,
                                    .n_inputs = (uint32_t)m.n_inputs,
                                    .params = m.params,
                                    .n_params = (uint32_t)m.n_params,
                                    .name = m.name,
                                    .pipeline = &cli_pipeline};
        if (train) req = train_step_request(&m, &ts);
        req.profile = per_kernel;
        t_compile = now_ms();
        double cpu0 = thread_cpu_ms();
        if (!kiln_compile_graph(&req, &cr.c, diags)) goto done;
        t_compile = now_ms() - t_compile;
        /* loading and compiling only, as the wall figure: not the parameters' random
         * initialisation and the input buffers between them */
        cpu_compile = cpu_load + thread_cpu_ms() - cpu0;
        cli_print_dump(cr.c.dump);
        /* the copies below come on top of the fresh parameters */
        if (!limits_check_blobs(g, param_bytes + cr.c.params_bytes, train ? cr.c.optim_bytes : 0,
                                cr.c.workspace_bytes, 0, "bench", diags))
            goto done;
        params = kiln_aligned_alloc((size_t)cr.c.params_bytes);
        workspace = kiln_aligned_alloc((size_t)cr.c.workspace_bytes);
        KILN_ASSERT(params && workspace);
        for (int i = 0; i < m.n_params; i++)
            memcpy((char *)params + cr.c.param_offsets[i], blobs[i],
                   (size_t)kiln_type_numel(&g->nodes[m.params[i]].type) * KILN_ELEM_BYTES);
        if (train) {
            optim = kiln_aligned_alloc((size_t)cr.c.optim_bytes);
            KILN_ASSERT(optim != NULL);
        }
        cr.args = calloc(cr.c.n_args, sizeof *cr.args);
        cr.arg_ptrs = calloc(cr.c.n_args, sizeof *cr.arg_ptrs);
        types = calloc(cr.c.n_args, sizeof *types);
        KILN_ASSERT(cr.args && cr.arg_ptrs && types);
        /* forward: (params, workspace, inputs…, outputs…);
         * train: (params, optim, workspace, inputs…, float lr, float *loss) */
        uint32_t k = 0, lr_arg = UINT32_MAX;
        cr.args[k++] = params;
        if (train) cr.args[k++] = optim;
        cr.args[k++] = workspace;
        for (int i = 0; i < m.n_inputs; i++) cr.args[k++] = values[m.inputs[i]];
        if (train) {
            lr_arg = k++;
            cr.args[k++] = &loss;
        }
        for (uint32_t o = 0; !train && o < g->n_outputs; o++) {
            outs[o] = kiln_aligned_alloc((size_t)kiln_type_numel(&g->nodes[g->outputs[o].node].type) * KILN_ELEM_BYTES);
            KILN_ASSERT(outs[o] != NULL);
            cr.args[k++] = outs[o];
        }
        KILN_ASSERT(k == cr.c.n_args);
        for (uint32_t i = 0; i < k; i++) {
            types[i] = i == lr_arg ? &ffi_type_float : &ffi_type_pointer;
            cr.arg_ptrs[i] = i == lr_arg ? (void *)&lr : (void *)&cr.args[i];
        }
        KILN_ASSERT(ffi_prep_cif(&cr.cif, FFI_DEFAULT_ABI, k, &ffi_type_sint, types) == FFI_OK);
        if (per_kernel && kiln_profile_start((int)cr.c.sched.n_kernels + 1) != 0) {
            kiln_diags_add(diags, NULL, 0, 0, "--per-kernel", "out of memory for the profile");
            goto done;
        }
        n_times = time_runs(run_compiled, &cr, iters, times, diags);
    }
    if (n_times < 0) goto done;

    int64_t flops = train ? train_step_flops(g) : kiln_graph_flops(g);
    double median = times[n_times / 2], best = times[0], mean = 0;
    for (int i = 0; i < n_times; i++) mean += times[i] / n_times;
    const char *mode = interp ? "interp" : "compiled";
    const char *what = train ? "training step" : "forward pass";
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", m.name);
        cJSON_AddStringToObject(o, "mode", mode);
        cJSON_AddNumberToObject(o, "flops", (double)flops);
        cJSON_AddNumberToObject(o, "load_ms", t_load);
        if (!interp) {
            cJSON_AddNumberToObject(o, "kernels", cr.c.n_kernels);
            cJSON_AddNumberToObject(o, "functions", cr.c.n_functions);
            cJSON_AddNumberToObject(o, "compile_ms", t_load + t_compile);
            cJSON_AddNumberToObject(o, "compile_cpu_ms", cpu_compile);
            cJSON_AddNumberToObject(o, "cpu_load_ms", cpu_load);
            cJSON_AddNumberToObject(o, "build_ms", cr.c.ms_build);
            cJSON_AddNumberToObject(o, "optimize_ms", cr.c.ms_optimize);
            cJSON_AddNumberToObject(o, "jit_ms", cr.c.ms_jit);
            const kiln_compile_cpu *c = &cr.c.cpu;
            cJSON_AddNumberToObject(o, "cpu_plan_ms", c->plan);
            cJSON_AddNumberToObject(o, "cpu_build_ms", c->build);
            cJSON_AddNumberToObject(o, "cpu_optimize_ms", c->optimize);
            cJSON_AddNumberToObject(o, "cpu_jit_setup_ms", c->jit_setup);
            cJSON_AddNumberToObject(o, "cpu_machine_code_ms", c->machine_code);
            cJSON_AddNumberToObject(o, "cpu_gemm_thread_ms", c->gemm_thread);
            cJSON_AddNumberToObject(o, "workspace_bytes", (double)cr.c.workspace_bytes);
        }
        cJSON_AddNumberToObject(o, "runs", n_times);
        cJSON_AddNumberToObject(o, train ? "step_ms_median" : "forward_ms_median", median);
        cJSON_AddNumberToObject(o, train ? "step_ms_min" : "forward_ms_min", best);
        if (train) cJSON_AddNumberToObject(o, "optim_bytes", (double)cr.c.optim_bytes);
        cJSON_AddNumberToObject(o, "gflops_median", flops / median / 1e6);
        if (per_kernel) per_kernel_report(cr.c.g, &cr.c.sched, cr.c.kernel_fns, n_times, mean, o);
        char *text = cJSON_Print(o);
        puts(text);
        free(text);
        cJSON_Delete(o);
    } else {
        printf("model %s:", m.name);
        for (int i = 0; i < m.n_dims; i++) printf(" %s=%lld", m.dims[i].name, (long long)m.dims[i].value);
        printf(", %.3f GFLOP per %s\n", flops / 1e9, what);
        if (!interp) {
            printf("compile: %.1f ms from model file to entry point (load %.1f, plan+build %.1f, optimise %.1f, "
                   "jit %.1f); %d kernels, %d functions\n",
                   t_load + t_compile, t_load, cr.c.ms_build, cr.c.ms_optimize, cr.c.ms_jit, cr.c.n_kernels,
                   cr.c.n_functions);
            const kiln_compile_cpu *c = &cr.c.cpu;
            printf("compile CPU: %.1f ms (load %.1f, plan %.1f, build %.1f, optimise %.1f, jit setup %.1f, "
                   "machine code %.1f); GEMM functions on a second thread meanwhile %.1f\n",
                   cpu_compile, cpu_load, c->plan, c->build, c->optimize, c->jit_setup, c->machine_code,
                   c->gemm_thread);
        }
        printf("%s (%s): median %.3f ms, min %.3f ms over %d runs; %.1f GFLOP/s at the median\n",
               train ? "training step" : "forward", mode, median, best, n_times, flops / median / 1e6);
        if (per_kernel) per_kernel_report(cr.c.g, &cr.c.sched, cr.c.kernel_fns, n_times, mean, NULL);
    }
    status = EXIT_OK;

done:
    for (int i = 0; i < m.n_params; i++) kiln_aligned_free(blobs[i]);
    for (int i = 0; i < m.n_inputs; i++) kiln_aligned_free(values[m.inputs[i]]);
    for (uint32_t o = 0; o < g->n_outputs; o++) kiln_aligned_free(outs[o]);
    kiln_aligned_free(params);
    kiln_aligned_free(workspace);
    kiln_aligned_free(optim);
    train_step_free(&ts);
    free(outs);
    free(types);
    free(cr.args);
    free(cr.arg_ptrs);
    kiln_compiled_free(&cr.c);
    kiln_profile_stop();
    free(times);
    free(blobs);
    free(values);
    kiln_model_free(&m);
    return status;
}
