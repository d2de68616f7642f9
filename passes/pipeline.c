/* pipeline.c — the one list of stages every compilation goes through.
 *
 * Design (QBE's main.c): a flat, commented sequence of passes with the verifier between
 * them, each stage named so that `--disable-pass NAME` turns it off and
 * `--dump-after NAME` keeps the IR text it left. JIT (`run`, `train`, `bench`), AOT
 * (`compile`) and `check` all reach it through codegen's plan (codegen/jit.c), so what
 * is measured, exported and reported is the same program.
 *
 *   verify    the request's graph is well formed (its builder already checked the user's
 *             input; this catches internal errors of the passes that built it)
 *   autodiff  (training, kiln_pipeline_train) the loss's gradients (autodiff.c)
 *   optimizer (training, kiln_pipeline_train) the parameters' update (optimizer.c)
 *   recompute (training, run by the driver's train_step_build after the two above) the
 *             backward pass reads copies of cheap activations (gelu, layernorm…) instead
 *             of keeping them (checkpoint.c, kiln_recompute_light)
 *   live      which nodes the outputs and the updates need
 *   simplify  CSE, dead code, constant folding, algebraic identities (simplify.c). It
 *             rebuilds the graph, so from here on the program has a graph of its own and
 *             a map from the request's ids to it; the request's inputs, parameters and
 *             states are translated once, and callers translate any other id they hold
 *             with kiln_program_node. Checked by the verifier again (unless `verify` is
 *             off), and `live` is taken again over the new graph
 *   fuse      the kernel schedule (fuse.c); `epilogue` names its folding of elementwise
 *             nodes into GEMMs alone, so that it can be turned off by itself
 *   memplan   where every value lives, over the schedule's kernel order (memplan.c)
 *
 * The training stages have their own entry point, kiln_pipeline_train, run on the
 * driver's graph before it asks codegen to compile: they extend that graph in place and
 * return the ids of what they made (the gradients, the "lr" input, the optimizer
 * state), which the driver binds and compiles by, and activation checkpointing
 * (checkpoint.c) rebuilds the step between them and the rest. The list of stage names
 * is one table (`stages` below): verify, autodiff, optimizer, recompute, live, simplify,
 * fuse, epilogue, memplan.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* The one list of stage names, in pipeline order: whether --disable-pass may turn one
 * off, and what a compilation must be for the stage to run (KILN_RUNS_*). The parser
 * (kiln_pass_known, kiln_pass_optional), the help text and the check that --dump-after
 * names a stage that runs are all read from it. */
static const struct stage {
    const char *name;
    bool optional;
    unsigned needs;
} stages[] = {
    {"verify", true, KILN_RUNS_COMPILE},   {"autodiff", false, KILN_RUNS_GRADS},
    {"optimizer", false, KILN_RUNS_STEP},  {"recompute", true, KILN_RUNS_STEP},
    {"live", false, KILN_RUNS_COMPILE},    {"simplify", true, KILN_RUNS_COMPILE},
    {"fuse", true, KILN_RUNS_COMPILE},     {"epilogue", true, KILN_RUNS_COMPILE},
    {"memplan", false, KILN_RUNS_COMPILE},
};
enum { N_STAGES = sizeof stages / sizeof *stages };

static const struct stage *stage_find(const char *name)
{
    for (size_t i = 0; name && i < N_STAGES; i++)
        if (strcmp(stages[i].name, name) == 0) return &stages[i];
    return NULL;
}

bool kiln_pass_known(const char *name)
{
    return stage_find(name) != NULL;
}

const char *kiln_pass_names(void)
{
    static char list[256];
    if (!list[0]) kiln_pass_list(list, sizeof list, false, ", ");
    return list;
}

bool kiln_pass_optional(const char *name)
{
    const struct stage *s = stage_find(name);
    return s && s->optional;
}

unsigned kiln_pass_needs(const char *name)
{
    const struct stage *s = stage_find(name);
    return s ? s->needs : 0;
}

void kiln_pass_list(char *buf, size_t size, bool optional_only, const char *last_sep)
{
    size_t n = 0, count = 0, k = 0;
    for (size_t i = 0; i < N_STAGES; i++) count += !optional_only || stages[i].optional;
    buf[0] = 0;
    for (size_t i = 0; i < N_STAGES && n < size; i++) {
        if (optional_only && !stages[i].optional) continue;
        const char *sep = k == 0 ? "" : k + 1 == count ? last_sep : ", ";
        int w = snprintf(buf + n, size - n, "%s%s", sep, stages[i].name);
        if (w < 0) break;
        n += (size_t)w;
        k++;
    }
}

/* Whether `name` is in the comma-separated list. */
static bool listed(const char *list, const char *name)
{
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return true;
        if (!end) break;
        p = end + 1;
    }
    return false;
}

bool kiln_pass_disabled(const kiln_pipeline_options *o, const char *name)
{
    return o && listed(o->disable, name);
}

/* ---- dumps -------------------------------------------------------------------------------- */

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        KILN_ASSERT(n >= 0);
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        t->cap = (t->cap + (size_t)n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        KILN_ASSERT(t->s != NULL);
    }
}


/* The graph's text followed by the kernels, one line each: kind and members. */
static char *schedule_text(const kiln_graph *g, const kiln_kernel_schedule *s)
{
    text t = {0};
    char *ir = kiln_graph_print(g);
    add(&t, "%s", ir);
    free(ir);
    add(&t, "# %u kernels\n", s->n_kernels);
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        add(&t, "kernel %u %s:", k, kiln_kernel_kind_name(kn->kind));
        for (uint32_t i = 0; i < kn->n; i++) {
            uint32_t id = s->members[kn->first + i];
            if (i > 0 && kn->parts > 1 && i % (kn->n / kn->parts) == 0) add(&t, " |"); /* next part */
            add(&t, " %%%u%s", id, s->internal[id] ? "" : "*");
        }
        add(&t, "\n");
    }
    return t.s;
}

static char *plan_text(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p)
{
    static const char *const homes[] = {"none", "param", "input", "output", "const", "alias",
                                        "workspace", "state", "update", "fused"};
    text t = {0};
    char *ir = schedule_text(g, s);
    add(&t, "%s", ir);
    free(ir);
    add(&t, "# workspace %lld bytes (unplanned %lld, lower bound %lld)\n", (long long)p->workspace_bytes,
        (long long)p->unplanned_bytes, (long long)p->lower_bound_bytes);
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_home *h = &p->homes[id];
        if (h->kind == KILN_HOME_NONE) continue;
        add(&t, "%%%u %s", id, homes[h->kind]);
        if (h->kind == KILN_HOME_WORKSPACE) add(&t, " @%lld live %u..%u", (long long)h->offset, h->first, h->last);
        add(&t, "\n");
    }
    return t.s;
}

static void dump_graph(const kiln_pipeline_options *o, const char *stage, const kiln_graph *g, kiln_program *out)
{
    if (o && o->dump_after && strcmp(o->dump_after, stage) == 0 && !out->dump) out->dump = kiln_graph_print(g);
}

/* ---- the stages ---------------------------------------------------------------------------- */

/* Copies ids[0..n) into a new array, each translated into the program's graph. */
static uint32_t *translated(const kiln_program *p, const uint32_t *ids, uint32_t n)
{
    uint32_t *t = calloc(n ? n : 1, sizeof *t);
    KILN_ASSERT(t != NULL);
    for (uint32_t i = 0; i < n; i++) {
        t[i] = kiln_program_node(p, ids[i]);
        KILN_ASSERT(t[i] != KILN_NONE); /* sources always survive simplify */
    }
    return t;
}

/* simplify: out->g becomes the rebuilt graph, out->map the id translation. */
static bool simplify(const kiln_pipeline_request *req, kiln_program *out, kiln_diags *d)
{
    const kiln_graph *g = req->g;
    kiln_graph *s = malloc(sizeof *s);
    uint32_t *map = malloc((g->n_nodes ? g->n_nodes : 1) * sizeof *map);
    KILN_ASSERT(s != NULL && map != NULL);
    kiln_graph_init(s, g->name);
    kiln_simplify_options so = {.recompute_from = req->recompute_from};
    if (!kiln_simplify(g, s, map, &so, d)) {
        kiln_graph_free(s);
        free(s);
        free(map);
        return false;
    }
    out->g = out->owned = s;
    out->map = map;
    out->n_map = g->n_nodes;
    return true;
}

bool kiln_pipeline_run(const kiln_pipeline_request *req, kiln_program *out, kiln_diags *d)
{
    memset(out, 0, sizeof *out);
    out->g = req->g;
    const kiln_pipeline_options *o = req->options;
    bool verify = !kiln_pass_disabled(o, "verify");

    /* verify: an invalid graph here is a bug in whatever built it */
    if (verify && !kiln_graph_verify(req->g, d)) return false;
    dump_graph(o, "verify", req->g, out);

    /* live (of the request's graph: what its dump shows; taken again after simplify) */
    unsigned char *live = calloc(req->g->n_nodes ? req->g->n_nodes : 1, 1);
    KILN_ASSERT(live != NULL);
    kiln_graph_live(req->g, KILN_LIVE_UPDATES, live);
    dump_graph(o, "live", req->g, out);

    /* simplify */
    bool ok = true;
    if (!kiln_pass_disabled(o, "simplify")) {
        ok = simplify(req, out, d) && (!verify || kiln_graph_verify(out->g, d));
        if (ok) {
            free(live);
            live = calloc(out->g->n_nodes ? out->g->n_nodes : 1, 1);
            KILN_ASSERT(live != NULL);
            kiln_graph_live(out->g, KILN_LIVE_UPDATES, live);
        }
    }
    const kiln_graph *g = out->g;
    if (ok) {
        dump_graph(o, "simplify", g, out);
        out->inputs = translated(out, req->inputs, req->n_inputs);
        out->params = translated(out, req->params, req->n_params);
        out->states = translated(out, req->states, req->n_states);
        out->n_inputs = req->n_inputs;
        out->n_params = req->n_params;
        out->n_states = req->n_states;
    }

    /* fuse */
    bool fuse = !kiln_pass_disabled(o, "fuse");
    kiln_fuse_request fr = {live, fuse, fuse && !kiln_pass_disabled(o, "epilogue"), req->dropout_alone};
    ok = ok && kiln_fuse(g, &fr, &out->sched, d);
    /* `epilogue` is a part of kiln_fuse's one call (its GEMM grouping), not a pass after
     * it: what it leaves is the schedule fuse leaves */
    bool dump_sched = o && o->dump_after && (strcmp(o->dump_after, "fuse") == 0 || strcmp(o->dump_after, "epilogue") == 0);
    if (ok && dump_sched && !out->dump) out->dump = schedule_text(g, &out->sched);

    /* memplan: kernel scratch sizes come from codegen (they depend on the target) */
    int64_t *scratch = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *scratch);
    KILN_ASSERT(scratch != NULL);
    if (ok && req->scratch_sizes) req->scratch_sizes(g, &out->sched, req->scratch_ctx, scratch);
    kiln_plan_request pr = {live,        scratch,     out->inputs, req->n_inputs, out->params,
                            req->n_params, out->states, req->n_states, &out->sched};
    ok = ok && kiln_plan_memory(g, &pr, &out->plan, d);
    if (ok && o && o->dump_after && strcmp(o->dump_after, "memplan") == 0 && !out->dump)
        out->dump = plan_text(g, &out->sched, &out->plan);
    if (ok) { /* cheap next to compiling, and a wrong plan would corrupt memory silently */
        char msg[512];
        if (!kiln_memplan_check(&out->plan, msg, sizeof msg)) {
            kiln_diags_add(d, NULL, 0, 0, "memplan", "internal error: %s", msg);
            ok = false;
        }
    }
    free(scratch);
    free(live);
    if (!ok) kiln_program_free(out);
    return ok;
}

/* ---- the training stages -------------------------------------------------------------------- */

/* After a training stage: the verifier (unless off) and the stage's text when asked for. */
static bool after_train_stage(const kiln_train_request *req, const char *stage, const kiln_graph *g,
                              kiln_train_result *out, kiln_diags *d)
{
    const kiln_pipeline_options *o = req->options;
    if (!kiln_pass_disabled(o, "verify") && !kiln_graph_verify(g, d)) return false;
    if (o && o->dump_after && strcmp(o->dump_after, stage) == 0 && !out->dump) out->dump = kiln_graph_print(g);
    return true;
}

bool kiln_pipeline_train(kiln_graph *g, const kiln_train_request *req, kiln_train_result *out, kiln_diags *d)
{
    memset(out, 0, sizeof *out);
    out->n_forward = out->first_optim_node = g->n_nodes;
    out->optim.lr = KILN_NONE;
    uint32_t n_wrt = req->n_params + req->n_extra_wrt;
    const uint32_t *grads = req->grads;

    /* autodiff: the gradients of the loss w.r.t. the parameters, then the extra nodes */
    if (req->loss != KILN_NONE) {
        uint32_t *wrt = malloc((n_wrt ? n_wrt : 1) * sizeof *wrt);
        out->grads = calloc(n_wrt ? n_wrt : 1, sizeof *out->grads);
        KILN_ASSERT(wrt != NULL && out->grads != NULL);
        if (req->n_params) memcpy(wrt, req->params, req->n_params * sizeof *wrt);
        if (req->n_extra_wrt) memcpy(wrt + req->n_params, req->extra_wrt, req->n_extra_wrt * sizeof *wrt);
        bool ok = kiln_autodiff(g, req->loss, wrt, n_wrt, out->grads, d);
        free(wrt);
        if (!ok || !after_train_stage(req, "autodiff", g, out, d)) return false;
        grads = out->grads;
    }

    /* optimizer: the parameters' update from their gradients */
    out->first_optim_node = g->n_nodes;
    if (req->optim) {
        KILN_ASSERT(grads != NULL || req->n_params == 0);
        if (!kiln_optim_build(g, req->params, grads, req->n_params, req->optim, &out->optim, d)) return false;
        if (!after_train_stage(req, "optimizer", g, out, d)) return false;
    }
    return true;
}

void kiln_train_result_free(kiln_train_result *r)
{
    free(r->grads);
    free(r->dump);
    memset(r, 0, sizeof *r);
}

uint32_t kiln_program_node(const kiln_program *p, uint32_t id)
{
    if (id == KILN_NONE || !p->map) return id;
    KILN_ASSERT(id < p->n_map);
    return p->map[id];
}

void kiln_program_free(kiln_program *p)
{
    kiln_schedule_free(&p->sched);
    kiln_memplan_free(&p->plan);
    free(p->dump);
    free(p->inputs);
    free(p->params);
    free(p->states);
    free(p->map);
    if (p->owned) kiln_graph_free(p->owned);
    free(p->owned);
    memset(p, 0, sizeof *p);
}
