/* optimizer.c — the optimizer update as IR: appends to a graph (that already holds the
 * loss and the gradients) the nodes computing every trainable parameter's new value and
 * the new optimizer state, and records them as the graph's updates. A whole training
 * step is then one graph, planned and compiled like any other (../shared/DESIGN.md).
 *
 * The formulas are PyTorch's, so that a model trains as it would there:
 *
 *   clipping (torch.nn.utils.clip_grad_norm_, over the trainable gradients):
 *       norm = sqrt(Σ_p Σ g²);  g ← g · min(1, max_norm / (norm + 1e-6))
 *   AdamW (torch.optim.AdamW), t = the step number from 1:
 *       p ← p · (1 − lr·wd)                               (decoupled decay)
 *       m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
 *       p ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)
 *   SGD (torch.optim.SGD, dampening 0, not Nesterov):
 *       d = g + wd·p;  with momentum: b ← μ·b + d (b starts at 0, so the first step is
 *       torch's b = d), d = b;   p ← p − lr·d
 *
 * lr is a rank-0 f32 INPUT named "lr": the caller owns the schedule. A group's lr is
 * lr·lr_scale. Frozen parameters, and parameters whose gradient is a zeros constant (the
 * loss does not depend on them: torch leaves their .grad None and skips them), get no
 * update and no state.
 *
 * Optimizer state is STATE nodes, which live in the optimizer blob and start at zero:
 *   optim.step                     the step counter t (f32: exact up to 2^24 steps)
 *   optim.bias_correction1, …2     (adamw) 1 − β^t, kept by the recurrence
 *                                  c ← (1 − β) + β·c from c = 0. Why not pow(β, t): β is
 *                                  rounded to f32 (0.999 → 0.99900001), which puts a
 *                                  relative error of 1e-5 into 1 − β2^t on early steps;
 *                                  the recurrence keeps it near f32 rounding.
 *   optim.m.NAME, optim.v.NAME     (adamw) the moments
 *   optim.momentum.NAME            (sgd with momentum) the buffer
 *
 * The order of the appended nodes matters for memory: each new value's last node does
 * not read the old value (the old m is first scaled, then the scaled copy is added to),
 * so the memory planner computes new parameters and moments straight into the blobs
 * (passes/memplan.c, place_updates) with no extra workspace.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define ORIGIN "train"

typedef struct opt_ctx {
    kiln_graph *g;
    kiln_diags *d;
    bool failed;
} opt_ctx;

/* Every builder call goes through here: a refusal would be an internal error (the
 * inputs were checked), but it is reported rather than asserted. */
static uint32_t add(opt_ctx *c, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a)
{
    uint32_t id = kiln_graph_add(c->g, op, in, n_in, a, NULL, ORIGIN, c->d);
    if (id == KILN_NONE) c->failed = true;
    return id;
}

static uint32_t op1(opt_ctx *c, kiln_op op, uint32_t x) { return add(c, op, &x, 1, NULL); }

static uint32_t op2(opt_ctx *c, kiln_op op, uint32_t x, uint32_t y)
{
    uint32_t in[2] = {x, y};
    return add(c, op, in, 2, NULL);
}

static uint32_t scale(opt_ctx *c, uint32_t x, double by)
{
    kiln_attrs a = {0};
    a.scalar = by;
    return add(c, KILN_OP_SCALE, &x, 1, &a);
}

/* A rank-0 f32 constant; the value is rounded to f32 once. */
static uint32_t constant(opt_ctx *c, double v)
{
    float f = (float)v;
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.values = &f;
    a.n_values = 1;
    return add(c, KILN_OP_CONSTANT, NULL, 0, &a);
}

/* A zero-started STATE node of type t named prefix + name. */
static uint32_t state(opt_ctx *c, const char *prefix, const char *name, const kiln_type *t)
{
    size_t n = strlen(prefix) + strlen(name) + 1;
    char *full = malloc(n);
    KILN_ASSERT(full != NULL);
    snprintf(full, n, "%s%s", prefix, name);
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = t->rank;
    memcpy(a.shape, t->dims, sizeof a.shape);
    a.name = full;
    uint32_t id = kiln_graph_add(c->g, KILN_OP_STATE, NULL, 0, &a, full, ORIGIN, c->d);
    free(full);
    if (id == KILN_NONE) c->failed = true;
    return id;
}

static void update(opt_ctx *c, uint32_t target, uint32_t value)
{
    if (target != KILN_NONE && value != KILN_NONE) kiln_graph_add_update(c->g, target, value);
}

/* Σ x² over every element, rank 0. */
static uint32_t sum_squares(opt_ctx *c, uint32_t x)
{
    uint32_t sq = op1(c, KILN_OP_SQUARE, x);
    if (sq == KILN_NONE) return KILN_NONE;
    kiln_attrs a = {0};
    a.n_axes = c->g->nodes[sq].type.rank;
    for (int i = 0; i < a.n_axes; i++) a.axes[i] = i;
    return add(c, KILN_OP_SUM, &sq, 1, &a);
}

/* Whether a gradient node is a zeros constant: autodiff's "the loss does not depend on
 * this", torch's None gradient. */
static bool is_zero_grad(const kiln_graph *g, uint32_t id)
{
    const kiln_node *n = &g->nodes[id];
    if (n->op != KILN_OP_CONSTANT || n->type.dtype != KILN_F32 || !n->attrs.values) return false;
    const float *v = n->attrs.values;
    for (int64_t i = 0; i < n->attrs.n_values; i++)
        if (v[i] != 0.0f) return false;
    return true;
}

static bool matches(const char *glob, const char *name) { return fnmatch(glob, name, 0) == 0; }

bool kiln_optim_trained(const kiln_graph *g, const kiln_optim_config *cfg, uint32_t param, uint32_t grad)
{
    const char *name = g->nodes[param].attrs.name;
    for (int i = 0; i < cfg->n_freeze; i++)
        if (matches(cfg->freeze[i], name)) return false;
    return !is_zero_grad(g, grad);
}

/* Per-parameter settings: whether it is trained (kiln_optim_trained), and its group's
 * (the first matching group wins). */
typedef struct param_plan {
    bool trained;
    double lr_scale, weight_decay;
    int group;   /* index of its group, or -1 */
} param_plan;

static param_plan plan_param(const kiln_graph *g, const kiln_optim_config *cfg, uint32_t param, uint32_t grad)
{
    const char *name = g->nodes[param].attrs.name;
    param_plan pp = {kiln_optim_trained(g, cfg, param, grad), 1.0, cfg->weight_decay, -1};
    for (int i = 0; i < cfg->n_groups && pp.group < 0; i++)
        if (matches(cfg->groups[i].match, name)) {
            pp.group = i;
            pp.lr_scale = cfg->groups[i].lr_scale;
            pp.weight_decay = cfg->groups[i].weight_decay;
        }
    return pp;
}

/* The per-step scalars of one (lr_scale, weight_decay) setting. */
typedef struct step_scalars {
    uint32_t lr;     /* lr · lr_scale */
    uint32_t decay;  /* adamw: 1 − lr·wd */
    uint32_t step_size; /* adamw: lr / (1 − β1^t), once per setting rather than per
                           parameter (a rank-0 node per parameter would be a kernel each) */
} step_scalars;

static step_scalars scalars_for(opt_ctx *c, const kiln_optim_config *cfg, uint32_t lr, uint32_t one,
                                uint32_t step_div, const param_plan *pp)
{
    step_scalars s = {KILN_NONE, KILN_NONE, KILN_NONE};
    s.lr = pp->lr_scale == 1.0 ? lr : scale(c, lr, pp->lr_scale);
    if (cfg->kind == KILN_OPTIM_ADAMW) {
        s.decay = op2(c, KILN_OP_SUB, one, scale(c, s.lr, pp->weight_decay));
        s.step_size = op2(c, KILN_OP_DIV, s.lr, step_div);
    }
    return s;
}

bool kiln_optim_build(kiln_graph *g, const uint32_t *params, const uint32_t *grads, uint32_t n_params,
                      const kiln_optim_config *cfg, kiln_optim_result *out, kiln_diags *d)
{
    memset(out, 0, sizeof *out);
    out->lr = KILN_NONE;
    opt_ctx c = {g, d, false};

    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op == KILN_OP_INPUT && n->attrs.name && strcmp(n->attrs.name, "lr") == 0) {
            kiln_diags_add(d, NULL, 0, 0, n->origin ? n->origin : "inputs",
                           "an input is named 'lr', which the training step reserves for the learning rate");
            return false;
        }
    }
    for (uint32_t i = 0; i < n_params; i++) {
        KILN_ASSERT(params[i] < g->n_nodes && g->nodes[params[i]].op == KILN_OP_PARAM);
        KILN_ASSERT(grads[i] < g->n_nodes && kiln_type_equal(&g->nodes[grads[i]].type, &g->nodes[params[i]].type));
    }

    param_plan *pp = calloc(n_params ? n_params : 1, sizeof *pp);
    step_scalars *ss = calloc(n_params ? n_params : 1, sizeof *ss);
    KILN_ASSERT(pp && ss);
    for (uint32_t i = 0; i < n_params; i++) {
        pp[i] = plan_param(g, cfg, params[i], grads[i]);
        out->n_trained += pp[i].trained;
    }

    kiln_attrs lra = {0};
    lra.dtype = KILN_F32;
    lra.name = "lr";
    out->lr = kiln_graph_add(g, KILN_OP_INPUT, NULL, 0, &lra, "lr", ORIGIN, d);
    uint32_t one = constant(&c, 1.0);
    kiln_type scalar = {KILN_F32, 0, {0}};

    /* the step counter */
    uint32_t step = state(&c, "optim.step", "", &scalar);
    update(&c, step, op2(&c, KILN_OP_ADD, step, one));

    /* clipping: one coefficient for every trainable gradient */
    uint32_t coef = KILN_NONE;
    if (cfg->grad_clip > 0 && out->n_trained > 0) {
        uint32_t total = KILN_NONE;
        for (uint32_t i = 0; i < n_params; i++) {
            if (!pp[i].trained) continue;
            uint32_t s = sum_squares(&c, grads[i]);
            total = total == KILN_NONE ? s : op2(&c, KILN_OP_ADD, total, s);
        }
        uint32_t norm = op2(&c, KILN_OP_ADD, op1(&c, KILN_OP_SQRT, total), constant(&c, 1e-6));
        coef = op2(&c, KILN_OP_MINIMUM, op2(&c, KILN_OP_DIV, constant(&c, cfg->grad_clip), norm), one);
    }

    /* adamw: this step's bias corrections 1 − β^t */
    uint32_t step_div = KILN_NONE, sqrt_bc2 = KILN_NONE;
    if (cfg->kind == KILN_OPTIM_ADAMW) {
        uint32_t bc1 = state(&c, "optim.bias_correction1", "", &scalar);
        uint32_t bc2 = state(&c, "optim.bias_correction2", "", &scalar);
        uint32_t bc1_new = op2(&c, KILN_OP_ADD, constant(&c, 1.0 - cfg->beta1), scale(&c, bc1, cfg->beta1));
        uint32_t bc2_new = op2(&c, KILN_OP_ADD, constant(&c, 1.0 - cfg->beta2), scale(&c, bc2, cfg->beta2));
        update(&c, bc1, bc1_new);
        update(&c, bc2, bc2_new);
        step_div = bc1_new;
        sqrt_bc2 = op1(&c, KILN_OP_SQRT, bc2_new);
    }

    /* per-group scalars, shared by the group's parameters */
    for (uint32_t i = 0; i < n_params && !c.failed; i++) {
        if (!pp[i].trained) continue;
        uint32_t j = 0;
        while (j < i && !(pp[j].trained && pp[j].lr_scale == pp[i].lr_scale &&
                          pp[j].weight_decay == pp[i].weight_decay))
            j++;
        ss[i] = j < i ? ss[j] : scalars_for(&c, cfg, out->lr, one, step_div, &pp[i]);
    }

    for (uint32_t i = 0; i < n_params && !c.failed; i++) {
        if (!pp[i].trained) continue;
        uint32_t p = params[i];
        const char *name = g->nodes[p].attrs.name; /* arena-owned: stays put */
        /* a copy: adding nodes may move g->nodes */
        kiln_type ptype = g->nodes[p].type;
        const kiln_type *t = &ptype;
        uint32_t grad = coef == KILN_NONE ? grads[i] : op2(&c, KILN_OP_MUL, grads[i], coef);
        if (cfg->kind == KILN_OPTIM_ADAMW) {
            uint32_t m = state(&c, "optim.m.", name, t), v = state(&c, "optim.v.", name, t);
            /* p·(1 − lr·wd) first: the last node below then no longer reads p */
            uint32_t decayed = op2(&c, KILN_OP_MUL, p, ss[i].decay);
            uint32_t m_new = op2(&c, KILN_OP_ADD, scale(&c, m, cfg->beta1), scale(&c, grad, 1.0 - cfg->beta1));
            uint32_t v_new = op2(&c, KILN_OP_ADD, scale(&c, v, cfg->beta2),
                                 scale(&c, op1(&c, KILN_OP_SQUARE, grad), 1.0 - cfg->beta2));
            uint32_t denom = op2(&c, KILN_OP_ADD, op2(&c, KILN_OP_DIV, op1(&c, KILN_OP_SQRT, v_new), sqrt_bc2),
                                 constant(&c, cfg->eps));
            uint32_t delta = op2(&c, KILN_OP_MUL, op2(&c, KILN_OP_DIV, m_new, denom), ss[i].step_size);
            update(&c, m, m_new);
            update(&c, v, v_new);
            update(&c, p, op2(&c, KILN_OP_SUB, decayed, delta));
        } else {
            uint32_t dir = grad;
            if (pp[i].weight_decay != 0) dir = op2(&c, KILN_OP_ADD, grad, scale(&c, p, pp[i].weight_decay));
            if (cfg->momentum != 0) {
                uint32_t b = state(&c, "optim.momentum.", name, t);
                uint32_t b_new = op2(&c, KILN_OP_ADD, scale(&c, b, cfg->momentum), dir);
                update(&c, b, b_new);
                dir = b_new;
            }
            /* a copy of p (exact: x·1 = x) so that the last node does not read p */
            uint32_t kept = scale(&c, p, 1.0);
            update(&c, p, op2(&c, KILN_OP_SUB, kept, op2(&c, KILN_OP_MUL, dir, ss[i].lr)));
        }
    }
    free(pp);
    free(ss);
    for (uint32_t i = 0; i < g->n_nodes; i++) out->n_states += g->nodes[i].op == KILN_OP_STATE;
    return !c.failed && out->lr != KILN_NONE;
}
