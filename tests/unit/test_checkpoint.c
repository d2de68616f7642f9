/* test_checkpoint.c — activation checkpointing (passes/checkpoint.c).
 *
 * Design: a small model file is loaded twice and turned into a training step (autodiff
 * for every parameter, then AdamW with clipping and weight decay, as the driver's
 * train_step_build does); one copy is rewritten by kiln_checkpoint. Both steps then run
 * side by side for a few steps from the same parameters, inputs and dropout seed, through
 * the reference interpreter and through compiled code, and must agree bit for bit: loss,
 * parameters and the whole optimizer state. The models have dropout in their blocks, so a
 * recomputed dropout must draw its forward's mask. Structure is checked too: the blocks
 * found, the verifier, the text form, that no node after the forward pass reads a
 * block's internal value, and that the compiled workspace shrinks. The light
 * recomputation (kiln_recompute_light: gelu and layernorm results only) is checked the same
 * way, and its plan must write some elementwise result over a dying input (memplan.c's
 * in-place values) and pass kiln_memplan_check.
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
#include "frontend.h"
#include "kiln/runtime.h"
#include "passes.h"

/* A GPT-style model: 3 pre-LN causal blocks with dropout, tied output embedding. */
static const char *const gpt_model =
    "{\"format\": \"kiln/1\", \"name\": \"gpt\", \"dims\": {\"B\": 2, \"T\": 8},\n"
    " \"inputs\": {\"tokens\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"},\n"
    "            \"targets\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"}},\n"
    " \"layers\": [\n"
    "  {\"name\": \"wte\", \"op\": \"embedding\", \"in\": \"tokens\", \"vocab\": 11, \"dim\": 16},\n"
    "  {\"name\": \"wpe\", \"op\": \"pos_encoding\", \"kind\": \"learned\", \"max_len\": 8},\n"
    "  {\"name\": \"blocks\", \"op\": \"encoder_layer\", \"repeat\": 3, \"heads\": 2, \"hidden\": 32,\n"
    "   \"norm\": \"pre\", \"causal\": true, \"activation\": \"gelu_tanh\", \"dropout\": 0.2},\n"
    "  {\"name\": \"ln_f\", \"op\": \"layernorm\"},\n"
    "  {\"name\": \"logits\", \"op\": \"linear\", \"out\": 11, \"bias\": false, \"tie\": \"wte.weight\"}],\n"
    " \"outputs\": [\"logits\"],\n"
    " \"losses\": [{\"op\": \"cross_entropy\", \"in\": [\"logits\", \"targets\"]}],\n"
    " \"train\": {\"optimizer\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.1, \"grad_clip\": 1.0}}\n";

/* An encoder-decoder: two chains (enc.0–1, dec.0–1), the decoder reading the encoder's
 * output (a block boundary) and a padding mask in every block. */
static const char *const seq2seq_model =
    "{\"format\": \"kiln/1\", \"name\": \"s2s\", \"dims\": {\"B\": 2, \"S\": 6, \"T\": 5},\n"
    " \"inputs\": {\"src\": {\"shape\": [\"B\", \"S\"], \"dtype\": \"i32\"},\n"
    "            \"src_mask\": {\"shape\": [\"B\", \"S\"], \"dtype\": \"i32\"},\n"
    "            \"tgt_in\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"},\n"
    "            \"tgt_out\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"}},\n"
    " \"layers\": [\n"
    "  {\"name\": \"src_emb\", \"op\": \"embedding\", \"in\": \"src\", \"vocab\": 9, \"dim\": 8},\n"
    "  {\"name\": \"src_pos\", \"op\": \"pos_encoding\", \"kind\": \"sinusoidal\"},\n"
    "  {\"name\": \"enc\", \"op\": \"encoder_layer\", \"mask\": \"src_mask\", \"repeat\": 2,\n"
    "   \"heads\": 2, \"hidden\": 16, \"norm\": \"post\", \"activation\": \"relu\", \"dropout\": 0.25},\n"
    "  {\"name\": \"tgt_emb\", \"op\": \"embedding\", \"in\": \"tgt_in\", \"vocab\": 9, \"dim\": 8},\n"
    "  {\"name\": \"tgt_pos\", \"op\": \"pos_encoding\", \"kind\": \"sinusoidal\"},\n"
    "  {\"name\": \"dec\", \"op\": \"decoder_layer\", \"memory\": \"enc\", \"memory_mask\": \"src_mask\",\n"
    "   \"repeat\": 2, \"heads\": 2, \"hidden\": 16, \"norm\": \"pre\", \"causal\": true,\n"
    "   \"activation\": \"gelu\", \"dropout\": 0.25},\n"
    "  {\"name\": \"logits\", \"op\": \"linear\", \"out\": 9}],\n"
    " \"outputs\": [\"logits\"],\n"
    " \"losses\": [{\"op\": \"cross_entropy\", \"in\": [\"logits\", \"tgt_out\"]}],\n"
    " \"train\": {\"optimizer\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.05, \"grad_clip\": 0.5}}\n";

#define MAX_STATES 512

/* One training step graph and the ids the caller keeps. */
typedef struct step {
    kiln_model m;
    uint32_t n_forward, lr, step_state;
    uint32_t states[MAX_STATES];
    uint32_t n_states;
    kiln_checkpoint_result ck;
} step;

static void fail_diags(kiln_diags *d, const char *what)
{
    for (int i = 0; i < d->n; i++)
        print_error("%s: %s: %s\n", what, d->items[i].where ? d->items[i].where : "", d->items[i].message);
    fail_msg("%s failed", what);
}

static void find_states(step *s)
{
    const kiln_graph *g = &s->m.graph;
    s->n_states = 0;
    s->step_state = KILN_NONE;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        if (g->nodes[id].op != KILN_OP_STATE) continue;
        assert_true(s->n_states < MAX_STATES);
        s->states[s->n_states++] = id;
        if (strcmp(g->nodes[id].attrs.name, "optim.step") == 0) s->step_state = id;
    }
}

enum { PLAIN, BLOCKS, LIGHT };

/* Loads the model and builds its training step; BLOCKS rewrites it with kiln_checkpoint,
 * LIGHT with kiln_recompute_light. */
static void step_build(step *s, const char *text, int mode)
{
    memset(s, 0, sizeof *s);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_load_options opt = {0};
    if (!kiln_model_load_text(&s->m, text, strlen(text), "test.json", &opt, &d)) fail_diags(&d, "load");
    kiln_graph *g = &s->m.graph;
    g->n_outputs = 0;
    kiln_graph_add_output(g, "loss", g->loss);
    uint32_t n = (uint32_t)s->m.n_params, grads[256];
    assert_true(n <= 256);
    s->n_forward = g->n_nodes;
    if (!kiln_autodiff(g, g->loss, s->m.params, n, grads, &d)) fail_diags(&d, "autodiff");
    const kiln_train_config *t = &s->m.train;
    kiln_optim_config cfg = {.kind = KILN_OPTIM_ADAMW, .beta1 = t->beta1, .beta2 = t->beta2, .eps = t->eps,
                             .weight_decay = t->weight_decay, .grad_clip = t->grad_clip};
    kiln_optim_result res;
    if (!kiln_optim_build(g, s->m.params, grads, n, &cfg, &res, &d)) fail_diags(&d, "optimizer");
    s->lr = res.lr;
    find_states(s);
    if (mode != PLAIN) {
        uint32_t n_old = g->n_nodes, *map = malloc(n_old * sizeof *map);
        uint32_t *old_states = malloc(s->n_states * sizeof *old_states), old_lr = s->lr;
        memcpy(old_states, s->states, s->n_states * sizeof *old_states);
        bool ok = mode == BLOCKS ? kiln_checkpoint(g, s->n_forward, map, &s->ck, &d)
                                 : kiln_recompute_light(g, s->n_forward, map, &s->ck, &d);
        if (!ok) fail_diags(&d, "checkpoint");
        for (uint32_t id = 0; id < s->n_forward; id++) assert_int_equal(map[id], id);
        /* the states keep their order; the map agrees with a fresh scan */
        find_states(s);
        for (uint32_t i = 0; i < s->n_states; i++) assert_int_equal(map[old_states[i]], s->states[i]);
        s->lr = map[old_lr];
        assert_int_equal(g->nodes[s->lr].op, KILN_OP_INPUT);
        assert_string_equal(g->nodes[s->lr].attrs.name, "lr");
        free(map);
        free(old_states);
    }
    if (!kiln_graph_verify(g, &d)) fail_diags(&d, "verify");
    kiln_diags_free(&d);
}

static void step_free(step *s) { kiln_model_free(&s->m); }

/* Whether forward node id is inside a repeated block (not a source, not a block output,
 * built by the layer with the blocks' origin). */
static bool block_internal(const kiln_graph *g, uint32_t id, const char *origin)
{
    const kiln_node *n = &g->nodes[id];
    if (kiln_op_table[n->op].kind == KILN_KIND_SOURCE || !n->origin || strcmp(n->origin, origin) != 0) return false;
    return !(n->label && strchr(n->label, '.') && strspn(strrchr(n->label, '.') + 1, "0123456789") > 0);
}

/* Deterministic inputs: ids in 0..6 (every model's vocabulary is larger), masks of ones
 * with the last position of the first row padded. */
static void fill_inputs(const kiln_model *m, void **bufs)
{
    for (int i = 0; i < m->n_inputs; i++) {
        const kiln_node *n = &m->graph.nodes[m->inputs[i]];
        int64_t count = kiln_type_numel(&n->type);
        int32_t *v = calloc((size_t)count, 4);
        bool mask = strstr(n->attrs.name, "mask") != NULL;
        for (int64_t j = 0; j < count; j++) v[j] = mask ? j != n->type.dims[1] - 1 : (int32_t)((j * 5 + 3 + i) % 7);
        bufs[i] = v;
    }
}

static float param_value(const kiln_node *n, int64_t j, int p)
{
    float base = n->attrs.init == KILN_INIT_ONES ? 1.0f : 0.0f;
    return base + (float)(0.3 * sin(0.7 * (double)j + 1.3 * p));
}

/* Runs `steps` training steps through the interpreter; params[p] and loss[] receive the
 * results, states[] (optimizer blob order) the final state. */
static void run_interp(step *s, int steps, float **params, float *loss, float **states)
{
    kiln_graph *g = &s->m.graph;
    kiln_diags d;
    kiln_diags_init(&d);
    void *inputs[8];
    fill_inputs(&s->m, inputs);
    for (int p = 0; p < s->m.n_params; p++) {
        const kiln_node *n = &g->nodes[s->m.params[p]];
        for (int64_t j = 0; j < kiln_type_numel(&n->type); j++) params[p][j] = param_value(n, j, p);
    }
    for (uint32_t i = 0; i < s->n_states; i++)
        memset(states[i], 0, (size_t)kiln_type_numel(&g->nodes[s->states[i]].type) * 4);
    for (int t = 0; t < steps; t++) {
        void **values = calloc(g->n_nodes, sizeof *values);
        float lr = 0.01f;
        for (int i = 0; i < s->m.n_inputs; i++) values[s->m.inputs[i]] = inputs[i];
        for (int p = 0; p < s->m.n_params; p++) values[s->m.params[p]] = params[p];
        for (uint32_t i = 0; i < s->n_states; i++) values[s->states[i]] = states[i];
        values[s->lr] = &lr;
        if (!kiln_interp_run(g, values, true, 42 + (uint64_t)t, &d)) fail_diags(&d, "interp");
        loss[t] = *(float *)values[g->loss];
        kiln_interp_free_values(g, values);
        free(values);
    }
    for (int i = 0; i < s->m.n_inputs; i++) free(inputs[i]);
    kiln_diags_free(&d);
}

static float **alloc_params(const kiln_model *m)
{
    float **p = calloc((size_t)m->n_params, sizeof *p);
    for (int i = 0; i < m->n_params; i++)
        p[i] = calloc((size_t)kiln_type_numel(&m->graph.nodes[m->params[i]].type), 4);
    return p;
}

static float **alloc_states(const step *s)
{
    float **p = calloc(s->n_states, sizeof *p);
    for (uint32_t i = 0; i < s->n_states; i++)
        p[i] = calloc((size_t)kiln_type_numel(&s->m.graph.nodes[s->states[i]].type) + 1, 4);
    return p;
}

static void free_all(float **p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) free(p[i]);
    free(p);
}

/* The compiled steps of both graphs; returns the two workspaces' sizes. */
typedef int (*entry2)(float *, float *, void *, void *, void *, float, float *);
typedef int (*entry4)(float *, float *, void *, void *, void *, void *, void *, float, float *);

typedef struct compiled_run {
    kiln_compiled c;
    float *params, *optim;
    void *ws;
    float loss[4];
} compiled_run;

static void run_compiled(step *s, int steps, compiled_run *r)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_compile_request req = {.g = &s->m.graph, .inputs = s->m.inputs, .n_inputs = (uint32_t)s->m.n_inputs,
                                .params = s->m.params, .n_params = (uint32_t)s->m.n_params, .name = s->m.name,
                                .train = true, .states = s->states, .n_states = s->n_states, .lr = s->lr,
                                .dropout = true, .dropout_step = s->step_state, .dropout_seed = 42,
                                /* the copies must stay copies through simplify's CSE */
                                .recompute_from = s->ck.n_recomputed ? s->n_forward : 0};
    if (!kiln_compile_graph(&req, &r->c, &d)) fail_diags(&d, "compile");
    r->params = kiln_aligned_alloc((size_t)r->c.params_bytes);
    r->optim = kiln_aligned_alloc((size_t)r->c.optim_bytes);
    r->ws = kiln_aligned_alloc((size_t)r->c.workspace_bytes + 64);
    memset(r->optim, 0, (size_t)r->c.optim_bytes);
    const kiln_graph *g = &s->m.graph;
    for (int p = 0; p < s->m.n_params; p++) {
        const kiln_node *n = &g->nodes[s->m.params[p]];
        float *at = (float *)((char *)r->params + r->c.param_offsets[p]);
        for (int64_t j = 0; j < kiln_type_numel(&n->type); j++) at[j] = param_value(n, j, p);
    }
    void *in[8];
    fill_inputs(&s->m, in);
    for (int t = 0; t < steps; t++) {
        int rc = s->m.n_inputs == 2
                     ? ((entry2)r->c.entry)(r->params, r->optim, r->ws, in[0], in[1], 0.01f, &r->loss[t])
                     : ((entry4)r->c.entry)(r->params, r->optim, r->ws, in[0], in[1], in[2], in[3], 0.01f, &r->loss[t]);
        assert_int_equal(rc, 0);
    }
    for (int i = 0; i < s->m.n_inputs; i++) free(in[i]);
    kiln_diags_free(&d);
}

static void compiled_free(compiled_run *r)
{
    kiln_aligned_free(r->params);
    kiln_aligned_free(r->optim);
    kiln_aligned_free(r->ws);
    kiln_compiled_free(&r->c);
}

/* Whether forward node x is one the light recomputation copies (and may not be read after
 * the forward pass): a gelu_tanh, relu or layernorm result. */
static bool light_result(const kiln_graph *g, uint32_t x)
{
    kiln_op op = g->nodes[x].op;
    return op == KILN_OP_GELU_TANH || op == KILN_OP_RELU || op == KILN_OP_LAYERNORM;
}

/* The light step's plan: valid, and with some value written over a dying input. */
static void check_in_place(step *s)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_compile_request req = {.g = &s->m.graph, .inputs = s->m.inputs, .n_inputs = (uint32_t)s->m.n_inputs,
                                .params = s->m.params, .n_params = (uint32_t)s->m.n_params, .name = s->m.name,
                                .train = true, .states = s->states, .n_states = s->n_states, .lr = s->lr,
                                .dropout = true, .dropout_step = s->step_state, .dropout_seed = 42,
                                .recompute_from = s->n_forward};
    kiln_memplan p;
    int n_kernels = 0;
    if (!kiln_codegen_plan(&req, &p, &n_kernels, &d)) fail_diags(&d, "plan");
    char msg[512];
    if (!kiln_memplan_check(&p, msg, sizeof msg)) fail_msg("memplan check: %s", msg);
    int over = 0;
    for (uint32_t id = 0; id < p.n_nodes; id++) {
        const kiln_home *h = &p.homes[id];
        if (h->kind != KILN_HOME_WORKSPACE || !h->over) continue;
        const kiln_home *x = &p.homes[h->over - 1];
        assert_int_equal(x->kind, KILN_HOME_WORKSPACE);
        assert_int_equal(x->offset, h->offset);
        assert_int_equal(x->bytes, h->bytes);
        assert_int_equal(x->last, h->first);
        over++;
    }
    print_message("%s: %d values written in place over a dying input\n", s->m.name, over);
    assert_true(over > 0);
    int64_t bytes = 0;
    uint32_t at = kiln_memplan_peak(&p, &bytes);
    assert_true(at <= (uint32_t)n_kernels && bytes > 0 && bytes <= p.workspace_bytes);
    kiln_memplan_free(&p);
    kiln_diags_free(&d);
}

/* The whole comparison for one model: n_blocks blocks expected, named by `origins`; with
 * `light`, the light recomputation instead (no blocks). */
static void check_model(const char *text, uint32_t n_blocks, const char *const *origins, int n_origins, bool light)
{
    step plain, ck;
    step_build(&plain, text, PLAIN);
    step_build(&ck, text, light ? LIGHT : BLOCKS);
    const kiln_graph *g = &ck.m.graph;
    assert_int_equal(ck.ck.n_blocks, light ? 0 : n_blocks);
    assert_true(ck.ck.n_recomputed > 0);
    assert_int_equal(g->n_nodes, plain.m.graph.n_nodes + ck.ck.n_recomputed);
    assert_int_equal(g->n_updates, plain.m.graph.n_updates);
    assert_int_equal(g->loss, plain.m.graph.loss);

    /* no node after the forward pass reads a block's internal value (light: a recomputed
     * result), while the plain step's backward did */
    int internal_reads = 0;
    for (uint32_t id = ck.n_forward; light && id < g->n_nodes; id++)
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++)
            internal_reads += g->nodes[id].in[j] < ck.n_forward && light_result(g, g->nodes[id].in[j]);
    assert_int_equal(internal_reads, 0);
    const kiln_graph *pg0 = &plain.m.graph;
    for (uint32_t id = plain.n_forward; light && id < pg0->n_nodes; id++)
        for (uint32_t j = 0; j < pg0->nodes[id].n_in; j++)
            internal_reads += pg0->nodes[id].in[j] < plain.n_forward && light_result(pg0, pg0->nodes[id].in[j]);
    assert_true(!light || internal_reads > 0);
    if (light) n_origins = 0, internal_reads = 0;
    for (uint32_t id = ck.n_forward; id < g->n_nodes; id++)
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++) {
            uint32_t x = g->nodes[id].in[j];
            for (int o = 0; o < n_origins && x < ck.n_forward; o++) internal_reads += block_internal(g, x, origins[o]);
        }
    assert_int_equal(internal_reads, 0);
    /* …while the plain step's backward did */
    internal_reads = 0;
    const kiln_graph *pg = &plain.m.graph;
    for (uint32_t id = plain.n_forward; id < pg->n_nodes; id++)
        for (uint32_t j = 0; j < pg->nodes[id].n_in; j++)
            for (int o = 0; o < n_origins && pg->nodes[id].in[j] < plain.n_forward; o++)
                internal_reads += block_internal(pg, pg->nodes[id].in[j], origins[o]);
    assert_true(light || internal_reads > 0);

    /* the text form round-trips */
    kiln_diags d;
    kiln_diags_init(&d);
    char *t1 = kiln_graph_print(g);
    kiln_graph parsed;
    kiln_graph_init(&parsed, "p");
    if (!kiln_graph_parse(&parsed, t1, "ck.kir", &d)) fail_diags(&d, "parse");
    char *t2 = kiln_graph_print(&parsed);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    kiln_graph_free(&parsed);
    kiln_diags_free(&d);

    /* the interpreter: bit for bit over 3 steps */
    enum { STEPS = 3 };
    float **pp = alloc_params(&plain.m), **cp = alloc_params(&ck.m);
    float **ps = alloc_states(&plain), **cs = alloc_states(&ck);
    float pl[STEPS], cl[STEPS];
    run_interp(&plain, STEPS, pp, pl, ps);
    run_interp(&ck, STEPS, cp, cl, cs);
    for (int t = 0; t < STEPS; t++) assert_memory_equal(&pl[t], &cl[t], 4);
    assert_true(pl[STEPS - 1] != pl[0]); /* it trains */
    for (int p = 0; p < plain.m.n_params; p++)
        assert_memory_equal(pp[p], cp[p], (size_t)kiln_type_numel(&pg->nodes[plain.m.params[p]].type) * 4);
    assert_int_equal(plain.n_states, ck.n_states);
    for (uint32_t i = 0; i < plain.n_states; i++)
        assert_memory_equal(ps[i], cs[i], (size_t)kiln_type_numel(&pg->nodes[plain.states[i]].type) * 4);

    /* compiled: bit for bit over 3 steps, and against the interpreter's losses */
    compiled_run pr = {0}, cr = {0};
    run_compiled(&plain, STEPS, &pr);
    run_compiled(&ck, STEPS, &cr);
    for (int t = 0; t < STEPS; t++) {
        assert_memory_equal(&pr.loss[t], &cr.loss[t], 4);
        if (fabsf(pr.loss[t] - pl[t]) > 1e-4f * fabsf(pl[t]))
            fail_msg("step %d: compiled loss %.9g, interpreter %.9g", t + 1, pr.loss[t], pl[t]);
    }
    assert_int_equal(pr.c.params_bytes, cr.c.params_bytes);
    assert_int_equal(pr.c.optim_bytes, cr.c.optim_bytes);
    assert_memory_equal(pr.params, cr.params, (size_t)pr.c.params_bytes);
    assert_memory_equal(pr.optim, cr.optim, (size_t)pr.c.optim_bytes);
    /* less memory, more kernels */
    print_message("%s: %u blocks, %u nodes recomputed; workspace %lld → %lld bytes, kernels %d → %d\n",
                  plain.m.name, ck.ck.n_blocks, ck.ck.n_recomputed, (long long)pr.c.workspace_bytes,
                  (long long)cr.c.workspace_bytes, pr.c.n_kernels, cr.c.n_kernels);
    assert_true(light ? cr.c.workspace_bytes <= pr.c.workspace_bytes : cr.c.workspace_bytes < pr.c.workspace_bytes);
    assert_true(cr.c.n_kernels > pr.c.n_kernels);
    if (light) check_in_place(&ck);

    compiled_free(&pr);
    compiled_free(&cr);
    free_all(pp, (uint32_t)plain.m.n_params);
    free_all(cp, (uint32_t)ck.m.n_params);
    free_all(ps, plain.n_states);
    free_all(cs, ck.n_states);
    step_free(&plain);
    step_free(&ck);
}

static void test_gpt(void **state)
{
    (void)state;
    const char *origins[] = {"layers[2]"};
    check_model(gpt_model, 3, origins, 1, false);
}

static void test_gpt_light(void **state)
{
    (void)state;
    check_model(gpt_model, 0, NULL, 0, true);
}

static void test_encoder_decoder(void **state)
{
    (void)state;
    const char *origins[] = {"layers[2]", "layers[5]"};
    check_model(seq2seq_model, 4, origins, 2, false);
}


/* Without repeated blocks nothing changes: same text, identity map. */
static void test_no_blocks(void **state)
{
    (void)state;
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, "t");
    kiln_diags_init(&d);
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = 1;
    a.shape[0] = 4;
    a.name = "w";
    uint32_t w = kiln_graph_add(&g, KILN_OP_PARAM, NULL, 0, &a, "w", "test", &d);
    uint32_t sq = kiln_graph_add(&g, KILN_OP_SQUARE, &w, 1, NULL, "h.x", "test", &d); /* not a chain: no P.0 */
    kiln_attrs s = {0};
    s.n_axes = 1;
    g.loss = kiln_graph_add(&g, KILN_OP_SUM, &sq, 1, &s, "loss", "test", &d);
    kiln_graph_add_output(&g, "loss", g.loss);
    uint32_t n_fwd = g.n_nodes, gw;
    if (!kiln_autodiff(&g, g.loss, &w, 1, &gw, &d)) fail_diags(&d, "autodiff");
    char *before = kiln_graph_print(&g);
    uint32_t map[64];
    kiln_checkpoint_result r;
    if (!kiln_checkpoint(&g, n_fwd, map, &r, &d)) fail_diags(&d, "checkpoint");
    assert_int_equal(r.n_blocks, 0);
    assert_int_equal(r.n_recomputed, 0);
    char *after = kiln_graph_print(&g);
    assert_string_equal(before, after);
    for (uint32_t id = 0; id < g.n_nodes; id++) assert_int_equal(map[id], id);
    free(before);
    free(after);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt),
        cmocka_unit_test(test_encoder_decoder),
        cmocka_unit_test(test_gpt_light),
        cmocka_unit_test(test_no_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
