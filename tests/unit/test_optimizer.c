/* test_optimizer.c — the optimizer update as IR (passes/optimizer.c), the STATE op and
 * graph updates it relies on (ir/), and the compiled training-step entry (codegen/).
 *
 * Design: an `og` is a graph with three parameters whose gradients are given as inputs
 * ("grad.NAME"), standing in for autodiff, and a scalar output "loss". kiln_optim_build
 * appends the update; each step then runs both through the interpreter and through the
 * compiled NAME_train_step(params, optim, workspace, g0, g1, g2, lr, loss), and both are
 * compared with a reference computed here in double from PyTorch's formulas
 * (torch.optim.AdamW, torch.optim.SGD, torch.nn.utils.clip_grad_norm_), carried over
 * several steps so that the moments, the bias corrections and the momentum buffers are
 * checked too. The learning rate of each step comes from the driver's schedule.
 * Training dropout is checked the same way: compiled masks against the interpreter's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "passes.h"
#include "schedule.h"

#define NP 3      /* parameters per test graph */
#define MAXN 20000 /* elements per parameter at most (more than one MULTI kernel chunk) */

typedef int (*train_step_fn)(float *params, float *optim, void *workspace, const float *g0, const float *g1,
                             const float *g2, float lr, float *loss);

typedef struct og {
    kiln_graph g;
    kiln_diags d;
    const char *names[NP];
    int64_t numel[NP];
    uint32_t params[NP], grads[NP];
    kiln_optim_result res;
    /* the state of the run: current parameters, gradients of the next step */
    float p[NP][MAXN], grad[NP][MAXN];
    /* interpreter buffers of STATE nodes, by node id */
    float **state_buf;
    /* compiled */
    kiln_compiled c;
    float *params_blob, *optim_blob;
    void *workspace;
    uint32_t states[64];
    uint32_t n_states;
} og;

static void fail_diags(kiln_diags *d, const char *what)
{
    for (int i = 0; i < d->n; i++)
        print_error("%s: %s: %s\n", what, d->items[i].where ? d->items[i].where : "", d->items[i].message);
    fail_msg("%s failed", what);
}

/* Deterministic, varied values: parameters around ±1, gradients of several magnitudes. */
static float value(int seed, int i) { return (float)(sin(seed * 12.9898 + i * 78.233) * 1.5); }

static void og_init(og *o, const char *const names[NP], const int64_t shapes[NP][2])
{
    memset(o, 0, sizeof *o);
    kiln_graph_init(&o->g, "t");
    kiln_diags_init(&o->d);
    for (int i = 0; i < NP; i++) {
        o->names[i] = names[i];
        kiln_attrs a = {0};
        a.dtype = KILN_F32;
        a.rank = shapes[i][1] ? 2 : 1;
        a.shape[0] = shapes[i][0];
        a.shape[1] = shapes[i][1];
        a.name = names[i];
        a.init = KILN_INIT_ZEROS;
        o->params[i] = kiln_graph_add(&o->g, KILN_OP_PARAM, NULL, 0, &a, names[i], "test", &o->d);
        char gname[64];
        snprintf(gname, sizeof gname, "grad.%s", names[i]);
        a.name = gname;
        o->grads[i] = kiln_graph_add(&o->g, KILN_OP_INPUT, NULL, 0, &a, gname, "test", &o->d);
        o->numel[i] = kiln_type_numel(&o->g.nodes[o->params[i]].type);
        assert_true(o->numel[i] <= MAXN);
        for (int j = 0; j < o->numel[i]; j++) o->p[i][j] = value(i + 1, j);
    }
    /* a stand-in loss that reads a parameter, as a real one does */
    uint32_t sq = kiln_graph_add(&o->g, KILN_OP_SQUARE, &o->params[0], 1, NULL, NULL, "test", &o->d);
    kiln_attrs s = {0};
    s.n_axes = o->g.nodes[sq].type.rank;
    for (int i = 0; i < s.n_axes; i++) s.axes[i] = i;
    o->g.loss = kiln_graph_add(&o->g, KILN_OP_SUM, &sq, 1, &s, "loss", "test", &o->d);
    kiln_graph_add_output(&o->g, "loss", o->g.loss);
    if (o->d.n) fail_diags(&o->d, "building");
}

static void og_build(og *o, const kiln_optim_config *cfg)
{
    if (!kiln_optim_build(&o->g, o->params, o->grads, NP, cfg, &o->res, &o->d)) fail_diags(&o->d, "kiln_optim_build");
    if (!kiln_graph_verify(&o->g, &o->d)) fail_diags(&o->d, "verify");
    for (uint32_t id = 0; id < o->g.n_nodes; id++)
        if (o->g.nodes[id].op == KILN_OP_STATE) o->states[o->n_states++] = id;
    assert_int_equal(o->n_states, o->res.n_states);
    /* interpreter state: zeroed buffers */
    o->state_buf = calloc(o->g.n_nodes, sizeof *o->state_buf);
    for (uint32_t s = 0; s < o->n_states; s++)
        o->state_buf[o->states[s]] = calloc((size_t)kiln_type_numel(&o->g.nodes[o->states[s]].type) + 1, 4);
    /* compiled: blobs start as the interpreter's */
    kiln_compile_request req = {.g = &o->g, .inputs = o->grads, .n_inputs = NP, .params = o->params,
                                .n_params = NP, .name = "t", .train = true, .states = o->states,
                                .n_states = o->n_states, .lr = o->res.lr};
    if (!kiln_compile_graph(&req, &o->c, &o->d)) fail_diags(&o->d, "kiln_compile_graph");
    assert_int_equal(o->c.n_args, 4 + NP + 1);
    o->params_blob = kiln_aligned_alloc((size_t)o->c.params_bytes);
    o->optim_blob = kiln_aligned_alloc((size_t)o->c.optim_bytes);
    o->workspace = kiln_aligned_alloc((size_t)o->c.workspace_bytes);
    for (int i = 0; i < NP; i++) memcpy((char *)o->params_blob + o->c.param_offsets[i], o->p[i], o->numel[i] * 4);
}

static void og_free(og *o)
{
    for (uint32_t s = 0; s < o->n_states; s++) free(o->state_buf[o->states[s]]);
    free(o->state_buf);
    kiln_aligned_free(o->params_blob);
    kiln_aligned_free(o->optim_blob);
    kiln_aligned_free(o->workspace);
    kiln_compiled_free(&o->c);
    kiln_graph_free(&o->g);
    kiln_diags_free(&o->d);
}

static uint32_t find_state(const og *o, const char *name)
{
    for (uint32_t s = 0; s < o->n_states; s++)
        if (strcmp(o->g.nodes[o->states[s]].attrs.name, name) == 0) return s;
    return KILN_NONE;
}

/* One step both ways; the interpreter's parameters become o->p. Checks the two agree. */
static void og_step(og *o, int step_seed, float lr)
{
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < o->numel[i]; j++) o->grad[i][j] = value(100 * step_seed + 10 * i, j) * (i + 1);
    void **values = calloc(o->g.n_nodes, sizeof *values);
    for (int i = 0; i < NP; i++) {
        values[o->params[i]] = o->p[i];
        values[o->grads[i]] = o->grad[i];
    }
    for (uint32_t s = 0; s < o->n_states; s++) values[o->states[s]] = o->state_buf[o->states[s]];
    values[o->res.lr] = &lr;
    if (!kiln_interp_run(&o->g, values, false, 0, &o->d)) fail_diags(&o->d, "interp");
    float interp_loss = *(float *)values[o->g.loss];
    kiln_interp_free_values(&o->g, values);
    free(values);

    float loss = NAN;
    train_step_fn fn = (train_step_fn)o->c.entry;
    assert_int_equal(fn(o->params_blob, o->optim_blob, o->workspace, o->grad[0], o->grad[1], o->grad[2], lr, &loss),
                     0);
    /* the loss is computed from the old parameters */
    assert_true(fabsf(loss - interp_loss) <= 1e-5f * fabsf(interp_loss));
    for (int i = 0; i < NP; i++) {
        const float *got = (const float *)((char *)o->params_blob + o->c.param_offsets[i]);
        for (int j = 0; j < o->numel[i]; j++)
            if (fabsf(got[j] - o->p[i][j]) > 2e-6f * fabsf(o->p[i][j]) + 1e-7f)
                fail_msg("%s[%d]: compiled %.9g, interpreter %.9g", o->names[i], j, got[j], o->p[i][j]);
    }
    for (uint32_t s = 0; s < o->n_states; s++) {
        const float *got = (const float *)((char *)o->optim_blob + o->c.state_offsets[s]);
        const float *want = o->state_buf[o->states[s]];
        int64_t n = kiln_type_numel(&o->g.nodes[o->states[s]].type);
        /* moments are sums of terms that cancel: the error scales with the largest */
        float scale = 0;
        for (int64_t j = 0; j < n; j++) scale = fmaxf(scale, fabsf(want[j]));
        for (int64_t j = 0; j < n; j++)
            if (fabsf(got[j] - want[j]) > 2e-6f * scale)
                fail_msg("%s[%lld]: compiled %.9g, interpreter %.9g", o->g.nodes[o->states[s]].attrs.name,
                         (long long)j, got[j], want[j]);
    }
}

/* ---- the reference (double, PyTorch's formulas) ---------------------------------------- */

typedef struct ref {
    double p[NP][MAXN], m[NP][MAXN], v[NP][MAXN];
    int64_t t;
} ref;

typedef struct ref_group {
    bool trained;
    double lr_scale, wd;
} ref_group;

static void ref_init(ref *r, const og *o)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < o->numel[i]; j++) r->p[i][j] = o->p[i][j];
}

/* clip_grad_norm_ over the trained gradients: the coefficient (1 when off). */
static double ref_clip(const og *o, const ref_group *grp, double max_norm)
{
    if (max_norm <= 0) return 1;
    double total = 0;
    for (int i = 0; i < NP; i++)
        for (int j = 0; grp[i].trained && j < o->numel[i]; j++) total += (double)o->grad[i][j] * o->grad[i][j];
    double coef = max_norm / (sqrt(total) + 1e-6);
    return coef < 1 ? coef : 1;
}

static void ref_adamw(ref *r, const og *o, const ref_group *grp, const kiln_optim_config *cfg, double lr)
{
    r->t++;
    double clip = ref_clip(o, grp, cfg->grad_clip);
    double bc1 = 1 - pow(cfg->beta1, (double)r->t), bc2 = 1 - pow(cfg->beta2, (double)r->t);
    for (int i = 0; i < NP; i++) {
        if (!grp[i].trained) continue;
        double glr = lr * grp[i].lr_scale;
        for (int j = 0; j < o->numel[i]; j++) {
            double g = o->grad[i][j] * clip;
            r->p[i][j] *= 1 - glr * grp[i].wd;
            r->m[i][j] = cfg->beta1 * r->m[i][j] + (1 - cfg->beta1) * g;
            r->v[i][j] = cfg->beta2 * r->v[i][j] + (1 - cfg->beta2) * g * g;
            double denom = sqrt(r->v[i][j]) / sqrt(bc2) + cfg->eps;
            r->p[i][j] -= glr / bc1 * r->m[i][j] / denom;
        }
    }
}

static void ref_sgd(ref *r, const og *o, const ref_group *grp, const kiln_optim_config *cfg, double lr)
{
    r->t++;
    double clip = ref_clip(o, grp, cfg->grad_clip);
    for (int i = 0; i < NP; i++) {
        if (!grp[i].trained) continue;
        double glr = lr * grp[i].lr_scale;
        for (int j = 0; j < o->numel[i]; j++) {
            double d = o->grad[i][j] * clip + grp[i].wd * r->p[i][j];
            if (cfg->momentum != 0) {
                /* torch: the first step clones d into the buffer */
                r->m[i][j] = r->t == 1 ? d : cfg->momentum * r->m[i][j] + d;
                d = r->m[i][j];
            }
            r->p[i][j] -= glr * d;
        }
    }
}

static void check_against(const og *o, const ref *r, double rtol, double atol)
{
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < o->numel[i]; j++)
            if (fabs(o->p[i][j] - r->p[i][j]) > rtol * fabs(r->p[i][j]) + atol)
                fail_msg("step %lld: %s[%d] = %.9g, reference %.9g", (long long)r->t, o->names[i], j, o->p[i][j],
                         r->p[i][j]);
}

static const char *const NAMES[NP] = {"emb.weight", "fc.weight", "fc.bias"};
static const int64_t SHAPES[NP][2] = {{5, 3}, {4, 3}, {4, 0}};

static kiln_optim_config adamw(void)
{
    return (kiln_optim_config){.kind = KILN_OPTIM_ADAMW, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

/* ---- tests ------------------------------------------------------------------------------ */

/* AdamW with decoupled weight decay, clipping that bites, and warmup, for three steps
 * (the bias corrections change every step). */
static void test_adamw_clip_warmup(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    kiln_optim_config cfg = adamw();
    cfg.weight_decay = 0.1;
    cfg.grad_clip = 0.5; /* the gradients' norm is about 6 */
    og_build(&o, &cfg);
    assert_int_equal(o.res.n_trained, 3);
    ref r;
    ref_init(&r, &o);
    ref_group grp[NP] = {{true, 1, 0.1}, {true, 1, 0.1}, {true, 1, 0.1}};
    kiln_lr_schedule sched = {KILN_SCHED_COSINE, 0.01, 0.001, 2, 10};
    for (int s = 0; s < 3; s++) {
        double lr = (float)kiln_schedule_lr(&sched, s);
        og_step(&o, s + 1, (float)lr);
        ref_adamw(&r, &o, grp, &cfg, lr);
        assert_true(ref_clip(&o, grp, cfg.grad_clip) < 0.2);
        check_against(&o, &r, 2e-6, 1e-7);
    }
    /* the state: step 3, moments as the reference's */
    uint32_t st = find_state(&o, "optim.step");
    assert_true(st != KILN_NONE);
    assert_true(o.state_buf[o.states[st]][0] == 3.0f);
    uint32_t m = find_state(&o, "optim.m.fc.weight"), v = find_state(&o, "optim.v.fc.weight");
    assert_true(m != KILN_NONE && v != KILN_NONE);
    for (int j = 0; j < 12; j++) {
        assert_true(fabs(o.state_buf[o.states[m]][j] - r.m[1][j]) <= 2e-6 * fabs(r.m[1][j]) + 1e-9);
        assert_true(fabs(o.state_buf[o.states[v]][j] - r.v[1][j]) <= 2e-6 * fabs(r.v[1][j]) + 1e-12);
    }
    uint32_t bc2 = find_state(&o, "optim.bias_correction2");
    assert_true(fabs(o.state_buf[o.states[bc2]][0] - (1 - pow(0.999, 3))) <= 1e-7 * (1 - pow(0.999, 3)));
    og_free(&o);
}

/* SGD with momentum and (L2) weight decay over three steps. */
static void test_sgd_momentum(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    kiln_optim_config cfg = {.kind = KILN_OPTIM_SGD, .momentum = 0.9, .weight_decay = 0.01};
    og_build(&o, &cfg);
    assert_true(find_state(&o, "optim.momentum.fc.bias") != KILN_NONE);
    assert_true(find_state(&o, "optim.m.fc.bias") == KILN_NONE);
    ref r;
    ref_init(&r, &o);
    ref_group grp[NP] = {{true, 1, 0.01}, {true, 1, 0.01}, {true, 1, 0.01}};
    for (int s = 0; s < 3; s++) {
        og_step(&o, s + 1, 0.05f);
        ref_sgd(&r, &o, grp, &cfg, 0.05f);
        check_against(&o, &r, 2e-6, 1e-7);
    }
    og_free(&o);
}

/* Plain SGD keeps no state but the step counter; with clipping. */
static void test_sgd_plain(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    kiln_optim_config cfg = {.kind = KILN_OPTIM_SGD, .grad_clip = 1.0};
    og_build(&o, &cfg);
    assert_int_equal(o.n_states, 1);
    ref r;
    ref_init(&r, &o);
    ref_group grp[NP] = {{true, 1, 0}, {true, 1, 0}, {true, 1, 0}};
    for (int s = 0; s < 2; s++) {
        og_step(&o, s + 1, 0.1f);
        ref_sgd(&r, &o, grp, &cfg, 0.1f);
        check_against(&o, &r, 2e-6, 1e-7);
    }
    og_free(&o);
}

/* freeze: no update, no state, and no part in the clipping norm; groups: first match
 * wins, with its own lr scale and weight decay. */
static void test_freeze_and_groups(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    const char *freeze[] = {"emb.*"};
    kiln_optim_group groups[] = {{"*.bias", 0.5, 0.0}, {"fc.*", 2.0, 0.2}, {"*", 10.0, 1.0}};
    kiln_optim_config cfg = adamw();
    cfg.weight_decay = 0.05;
    cfg.grad_clip = 2.0;
    cfg.freeze = freeze;
    cfg.n_freeze = 1;
    cfg.groups = groups;
    cfg.n_groups = 3;
    og_build(&o, &cfg);
    assert_int_equal(o.res.n_trained, 2);
    assert_true(find_state(&o, "optim.m.emb.weight") == KILN_NONE);
    assert_true(find_state(&o, "optim.v.emb.weight") == KILN_NONE);
    assert_true(find_state(&o, "optim.m.fc.bias") != KILN_NONE);
    float frozen[MAXN];
    memcpy(frozen, o.p[0], sizeof frozen);
    ref r;
    ref_init(&r, &o);
    ref_group grp[NP] = {{false, 1, 0}, {true, 2.0, 0.2}, {true, 0.5, 0.0}};
    for (int s = 0; s < 2; s++) {
        og_step(&o, s + 1, 0.01f);
        ref_adamw(&r, &o, grp, &cfg, 0.01f);
        check_against(&o, &r, 2e-6, 1e-7);
    }
    assert_memory_equal(frozen, o.p[0], sizeof frozen);
    /* and the compiled blob did not move it either */
    assert_memory_equal(frozen, (char *)o.params_blob + o.c.param_offsets[0], o.numel[0] * 4);
    og_free(&o);
}

/* A gradient that is a zeros constant (the loss does not use the parameter) means no
 * update at all, like torch's None gradient: not even weight decay. */
static void test_zero_gradient_is_skipped(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    float zero = 0;
    kiln_attrs z = {0};
    z.dtype = KILN_F32;
    z.rank = 1;
    z.shape[0] = 4;
    z.values = &zero;
    z.n_values = 1;
    o.grads[2] = kiln_graph_add(&o.g, KILN_OP_CONSTANT, NULL, 0, &z, NULL, "test", &o.d);
    kiln_optim_config cfg = adamw();
    cfg.weight_decay = 0.5;
    kiln_optim_result res;
    assert_true(kiln_optim_build(&o.g, o.params, o.grads, NP, &cfg, &res, &o.d));
    assert_int_equal(res.n_trained, 2);
    for (uint32_t u = 0; u < o.g.n_updates; u++) assert_true(o.g.updates[u].target != o.params[2]);
    kiln_graph_free(&o.g);
    kiln_diags_free(&o.d);
}

/* The plan computes every new parameter and moment straight into the blobs: only the
 * step counter (whose new value reads the old one) is copied at the end, and the
 * workspace holds no parameter-sized update buffers. */
static void check_updates_in_place(const kiln_optim_config *cfg, const char *disable)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    og_build(&o, cfg);
    kiln_pipeline_options popt = {.disable = disable};
    kiln_compile_request req = {.g = &o.g, .inputs = o.grads, .n_inputs = NP, .params = o.params, .n_params = NP,
                                .name = "t", .train = true, .states = o.states, .n_states = o.n_states,
                                .lr = o.res.lr, .pipeline = &popt};
    kiln_program prog; /* through the whole pipeline: simplify rebuilds the graph */
    assert_true(kiln_codegen_program(&req, &prog, &o.d));
    const kiln_graph *g = prog.g;
    const kiln_memplan *plan = &prog.plan;
    char msg[256];
    if (!kiln_memplan_check(plan, msg, sizeof msg)) fail_msg("%s", msg);
    assert_int_equal(plan->n_update_copies, 1);
    assert_string_equal(g->nodes[g->updates[plan->update_copies[0]].target].attrs.name, "optim.step");
    assert_int_equal(g->n_updates, o.g.n_updates);
    for (uint32_t u = 0; u < g->n_updates; u++) {
        const kiln_update *up = &g->updates[u];
        if (u == plan->update_copies[0]) continue;
        assert_int_equal(plan->homes[up->value].kind, KILN_HOME_UPDATE);
        assert_int_equal(plan->homes[up->value].index, up->target);
    }
    assert_int_equal(plan->homes[prog.states[0]].kind, KILN_HOME_STATE);
    assert_int_equal(prog.states[0], kiln_program_node(&prog, o.states[0]));
    if (cfg->kind == KILN_OPTIM_ADAMW) assert_true(plan->optim_bytes >= 2 * (12 + 15 + 4) * 4);
    kiln_program_free(&prog);
    og_free(&o);
}

/* AdamW and SGD (plain and with momentum), with simplify on (it removes SGD's copy of
 * the parameter: the fused kernel then reads and writes p at the same element) and off. */
static void test_updates_in_place(void **state)
{
    (void)state;
    kiln_optim_config adam = adamw();
    adam.weight_decay = 0.1;
    adam.grad_clip = 1.0;
    kiln_optim_config sgd = {.kind = KILN_OPTIM_SGD, .momentum = 0.9, .weight_decay = 0.01, .grad_clip = 1.0};
    kiln_optim_config plain = {.kind = KILN_OPTIM_SGD};
    const kiln_optim_config *cfgs[] = {&adam, &sgd, &plain};
    for (int i = 0; i < 3; i++) {
        check_updates_in_place(cfgs[i], NULL);
        check_updates_in_place(cfgs[i], "simplify");
    }
}

/* The update of every parameter is one MULTI kernel, and so is clipping's Σg² of every
 * gradient (passes/fuse.c, codegen/lower_multi.c), and they compute what the
 * interpreter does — on parameters of several chunks and of less than one. */
static void test_multi_tensor_kernels(void **state)
{
    static const int64_t shapes[NP][2] = {{150, 130}, {20000, 0}, {3, 0}};
    og *o = calloc(1, sizeof *o);
    ref *r = calloc(1, sizeof *r);
    assert_true(o && r);
    og_init(o, NAMES, shapes);
    kiln_optim_config cfg = adamw();
    cfg.weight_decay = 0.1;
    cfg.grad_clip = 0.5;
    og_build(o, &cfg);

    uint32_t inputs[NP + 1]; /* the gradients and lr, as codegen asks */
    memcpy(inputs, o->grads, sizeof o->grads);
    inputs[NP] = o->res.lr;
    kiln_pipeline_request preq = {.g = &o->g, .inputs = inputs, .n_inputs = NP + 1, .params = o->params,
                                  .n_params = NP, .states = o->states, .n_states = o->n_states};
    kiln_program prog;
    if (!kiln_pipeline_run(&preq, &prog, &o->d)) fail_diags(&o->d, "pipeline");
    int multis = 0, with_sum = 0;
    for (uint32_t k = 0; k < prog.sched.n_kernels; k++) {
        const kiln_kernel *kn = &prog.sched.kernels[k];
        if (kn->kind != KILN_KERNEL_MULTI) continue;
        multis++;
        int sums = 0;
        for (uint32_t i = 0; i < kn->n; i++) sums += o->g.nodes[prog.sched.members[kn->first + i]].op == KILN_OP_SUM;
        /* the update: one part per parameter; the sums: one per gradient, plus the
         * stand-in loss Σp², wired alike and independent of them */
        assert_int_equal(kn->parts, sums ? NP + 1 : NP);
        with_sum += sums;
    }
    assert_int_equal(multis, 2);
    assert_int_equal(with_sum, NP + 1);
    kiln_program_free(&prog);

    ref_init(r, o);
    ref_group grp[NP] = {{true, 1, 0.1}, {true, 1, 0.1}, {true, 1, 0.1}};
    for (int s = 0; s < 2; s++) {
        og_step(o, s + 1, 0.01f);
        ref_adamw(r, o, grp, &cfg, 0.01f);
    }
    og_free(o);
    free(o);
    free(r);
}

/* States and updates survive print → parse → print; the parser and the verifier refuse
 * bad updates. */
static void test_text_form(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    kiln_optim_config cfg = adamw();
    cfg.grad_clip = 1.0;
    kiln_optim_result res;
    assert_true(kiln_optim_build(&o.g, o.params, o.grads, NP, &cfg, &res, &o.d));
    char *text = kiln_graph_print(&o.g);
    assert_non_null(strstr(text, "= state \"optim.m.fc.weight\" : f32[4,3]"));
    assert_non_null(strstr(text, "\nupdate %"));
    kiln_graph back;
    kiln_graph_init(&back, NULL);
    if (!kiln_graph_parse(&back, text, "t.kir", &o.d)) fail_diags(&o.d, "parse");
    char *again = kiln_graph_print(&back);
    assert_string_equal(text, again);
    assert_int_equal(back.n_updates, o.g.n_updates);
    free(again);
    kiln_graph_free(&back);

    static const struct {
        const char *text, *error;
    } bad[] = {
        {"graph g\n%0 = input \"x\" : f32[2]\n%1 = neg(%0) : f32[2]\nupdate %0 = %1\n", "must be a param or a state"},
        {"graph g\n%0 = state \"s\" : f32[2]\n%1 = sum(%0) axes=[0] : f32[]\nupdate %0 = %1\n", "does not have"},
        {"graph g\n%0 = state \"s\" : f32[2]\n%1 = neg(%0) : f32[2]\nupdate %0 = %1\nupdate %0 = %0\n",
         "updated twice"},
        {"graph g\n%0 = state \"s\" : i32[2]\n", "optimizer state is f32"},
        {"graph g\n%0 = state \"s\" : f32[2]\nupdate %0 = %3\n", "not defined"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kiln_diags d;
        kiln_diags_init(&d);
        kiln_graph g;
        kiln_graph_init(&g, NULL);
        assert_false(kiln_graph_parse(&g, bad[i].text, "bad.kir", &d));
        assert_true(d.n == 1);
        if (!strstr(d.items[0].message, bad[i].error))
            fail_msg("case %zu: '%s' lacks '%s'", i, d.items[0].message, bad[i].error);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }

    /* the verifier: a mistyped update and a doubled target */
    kiln_graph_add_update(&o.g, o.params[0], o.grads[1]);
    assert_false(kiln_graph_verify(&o.g, &o.d));
    kiln_diags_free(&o.d);
    kiln_diags_init(&o.d);
    o.g.updates[o.g.n_updates - 1].value = o.grads[0];
    assert_false(kiln_graph_verify(&o.g, &o.d));
    assert_non_null(strstr(o.d.items[0].message, "also updated"));
    free(text);
    kiln_graph_free(&o.g);
    kiln_diags_free(&o.d);
}

/* A model input named "lr" would collide with the learning rate. */
static void test_lr_name_reserved(void **state)
{
    og o;
    og_init(&o, NAMES, SHAPES);
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.name = "lr";
    kiln_graph_add(&o.g, KILN_OP_INPUT, NULL, 0, &a, "lr", "inputs", &o.d);
    kiln_optim_config cfg = adamw();
    kiln_optim_result res;
    assert_false(kiln_optim_build(&o.g, o.params, o.grads, NP, &cfg, &res, &o.d));
    assert_non_null(strstr(o.d.items[0].message, "reserves"));
    kiln_graph_free(&o.g);
    kiln_diags_free(&o.d);
}

/* Dropout in a compiled training step drops the interpreter's elements (run seed =
 * dropout_seed + steps taken), forward and backward alike, with new masks every step. */
typedef int (*dropout_step_fn)(float *params, float *optim, void *workspace, const float *x, float lr, float *loss);

static void test_training_dropout(void **state)
{
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, "t");
    kiln_diags_init(&d);
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = 2;
    a.shape[0] = 6;
    a.shape[1] = 16;
    a.name = "x";
    uint32_t x = kiln_graph_add(&g, KILN_OP_INPUT, NULL, 0, &a, "x", "test", &d);
    a.name = "w";
    uint32_t w = kiln_graph_add(&g, KILN_OP_PARAM, NULL, 0, &a, "w", "test", &d);
    uint32_t in[2] = {x, w};
    uint32_t h = kiln_graph_add(&g, KILN_OP_MUL, in, 2, NULL, NULL, "test", &d);
    kiln_attrs da = {0};
    da.scalar = 0.5;
    uint32_t dropped = kiln_graph_add(&g, KILN_OP_DROPOUT, &h, 1, &da, NULL, "test", &d);
    uint32_t sq = kiln_graph_add(&g, KILN_OP_SQUARE, &dropped, 1, NULL, NULL, "test", &d);
    kiln_attrs sa = {0};
    sa.n_axes = 2;
    sa.axes[1] = 1;
    g.loss = kiln_graph_add(&g, KILN_OP_SUM, &sq, 1, &sa, "loss", "test", &d);
    kiln_graph_add_output(&g, "loss", g.loss);
    uint32_t gw;
    if (!kiln_autodiff(&g, g.loss, &w, 1, &gw, &d)) fail_diags(&d, "autodiff");
    kiln_optim_config cfg = {.kind = KILN_OPTIM_SGD};
    kiln_optim_result res;
    if (!kiln_optim_build(&g, &w, &gw, 1, &cfg, &res, &d)) fail_diags(&d, "optimizer");
    assert_int_equal(res.n_states, 1); /* optim.step */
    uint32_t step = KILN_NONE;
    for (uint32_t id = 0; id < g.n_nodes; id++)
        if (g.nodes[id].op == KILN_OP_STATE) step = id;
    kiln_compile_request req = {.g = &g, .inputs = &x, .n_inputs = 1, .params = &w, .n_params = 1, .name = "t",
                                .train = true, .states = &step, .n_states = 1, .lr = res.lr, .dropout = true,
                                .dropout_step = step, .dropout_seed = 42};
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, &d)) fail_diags(&d, "compile");
    assert_true(c.param_offsets[0] == 0 && c.state_offsets[0] == 0);
    float *params = kiln_aligned_alloc((size_t)c.params_bytes), *optim = kiln_aligned_alloc((size_t)c.optim_bytes);
    void *ws = kiln_aligned_alloc((size_t)c.workspace_bytes);
    float xs[96], wi[96], steps = 0;
    for (int i = 0; i < 96; i++) {
        xs[i] = value(7, i);
        wi[i] = params[i] = value(8, i);
    }
    int unchanged_before[96] = {0};
    for (int s = 0; s < 3; s++) {
        float lr = 0.1f, loss = 0, old[96];
        memcpy(old, wi, sizeof old);
        void **values = calloc(g.n_nodes, sizeof *values);
        values[x] = xs;
        values[w] = wi;
        values[step] = &steps;
        values[res.lr] = &lr;
        if (!kiln_interp_run(&g, values, true, 42 + (uint64_t)s, &d)) fail_diags(&d, "interp");
        kiln_interp_free_values(&g, values);
        free(values);
        assert_int_equal(((dropout_step_fn)c.entry)(params, optim, ws, xs, lr, &loss), 0);
        int unchanged = 0, same_mask = 0;
        for (int i = 0; i < 96; i++) {
            if (fabsf(params[i] - wi[i]) > 2e-6f * fabsf(wi[i]) + 1e-7f)
                fail_msg("step %d, w[%d]: compiled %.9g, interpreter %.9g", s + 1, i, params[i], wi[i]);
            bool kept_old = wi[i] == old[i]; /* dropped: no gradient, no change */
            unchanged += kept_old;
            same_mask += s > 0 && kept_old == unchanged_before[i];
            unchanged_before[i] = kept_old;
        }
        assert_true(unchanged > 96 / 5 && unchanged < 96 * 4 / 5);
        if (s > 0) assert_true(same_mask < 90); /* a new mask every step */
        assert_true(steps == (float)(s + 1) && optim[0] == steps);
    }
    kiln_aligned_free(params);
    kiln_aligned_free(optim);
    kiln_aligned_free(ws);
    kiln_compiled_free(&c);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_clip_warmup),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_freeze_and_groups),
        cmocka_unit_test(test_zero_gradient_is_skipped),
        cmocka_unit_test(test_updates_in_place),
        cmocka_unit_test(test_multi_tensor_kernels),
        cmocka_unit_test(test_text_form),
        cmocka_unit_test(test_lr_name_reserved),
        cmocka_unit_test(test_training_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
