/* test_rope_attention.c — rotary position embeddings inside the attention kernels
 * (passes/patterns.c: kiln_rope_match, kiln_rope_grad_match; codegen/lower_attention.c:
 * rotate on load, un-rotate on store), compiled through the whole pipeline against the
 * reference interpreter.
 *
 * Design: a case is an attention's shapes and options (T not a multiple of the query
 * block, head dims 8…96, causal or not, a padding mask, T ≠ S, rope on q and k or on q
 * only, q/k/v given as (B, T, H·d) projections split into heads by reshape + transpose as
 * the frontend does, or given as (B, H, T, d) directly). The graph rotates q and k with
 * primitive ops exactly as frontend/attention.c writes RoPE (slices, neg, concat, two
 * muls by (L, dh) tables, an add), attends, merges the heads, and takes
 * loss = Σ y·g for a random g; autodiff adds the gradients w.r.t. the three
 * projections. kiln_compile_graph compiles it (every stage on) and the compiled forward
 * output and gradients must match kiln_interp_run's within 1e-4 of the largest
 * magnitude, on 1 and 2 threads with bit-identical results. The schedule must show the
 * fusion: no kernel computes a slice, concat, neg or unslice (the rotation and its
 * gradient run inside the attention and attention_grad kernels), exactly one attention
 * and one attention_grad kernel, and for the frontend's layout a fixed kernel count.
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

typedef struct rcase {
    int64_t B, H, T, S, dh, dv;
    bool causal, mask, rope_k, split_heads;
} rcase;

typedef struct rgraph {
    kiln_graph g;
    kiln_diags d;
    uint32_t in[8], n_in;
    float *data[8];
    uint32_t y, grads[3];
} rgraph;

static uint64_t g_rng = 12345;
static double uniform(void)
{
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1.0p-53;
}

static void fail_with_diags(kiln_diags *d, const char *what)
{
    for (int i = 0; i < d->n; i++) print_error("%s: %s\n", what, d->items[i].message);
    fail_msg("%s failed", what);
}

static uint32_t add(rgraph *r, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *at)
{
    kiln_attrs none = {0};
    uint32_t id = kiln_graph_add(&r->g, op, in, n_in, at ? at : &none, NULL, "test", &r->d);
    if (id == KILN_NONE) fail_with_diags(&r->d, "kiln_graph_add");
    return id;
}
static uint32_t add2(rgraph *r, kiln_op op, uint32_t a, uint32_t b) { return add(r, op, (uint32_t[]){a, b}, 2, NULL); }

static uint32_t input(rgraph *r, int rank, const int64_t *dims, bool mask)
{
    kiln_attrs at = {.dtype = KILN_F32, .rank = rank};
    memcpy(at.shape, dims, (size_t)rank * sizeof *dims);
    char name[16];
    snprintf(name, sizeof name, "x%u", r->n_in);
    at.name = name;
    uint32_t id = add(r, KILN_OP_INPUT, NULL, 0, &at);
    int64_t n = kiln_type_numel(&r->g.nodes[id].type);
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = mask ? (float)(uniform() < 0.75) : (float)(2 * uniform() - 1);
    if (mask && rank == 2 && dims[0] > 1) /* the last batch is padding after 3 keys: skipped key blocks */
        for (int64_t j = 3; j < dims[1]; j++) p[(dims[0] - 1) * dims[1] + j] = 0;
    r->in[r->n_in] = id, r->data[r->n_in++] = p;
    return id;
}

/* (B, L, H·d) → (B, H, L, d), or an input of that shape */
static uint32_t heads(rgraph *r, const rcase *c, int64_t L, int64_t d)
{
    if (!c->split_heads) return input(r, 4, (int64_t[]){c->B, c->H, L, d}, false);
    uint32_t x = input(r, 3, (int64_t[]){c->B, L, c->H * d}, false);
    kiln_attrs rs = {.rank = 4, .shape = {c->B, L, c->H, d}};
    uint32_t x4 = add(r, KILN_OP_RESHAPE, &x, 1, &rs);
    kiln_attrs tr = {.perm = {0, 2, 1, 3}};
    return add(r, KILN_OP_TRANSPOSE, &x4, 1, &tr);
}

/* x (B, H, L, dh) → x·cos + concat(−x2, x1)·sin, as frontend/attention.c writes it */
static uint32_t rope(rgraph *r, uint32_t x, int64_t L, int64_t dh)
{
    int64_t h = dh / 2;
    float *cs = malloc((size_t)(2 * L * dh) * sizeof *cs), *sn = cs + L * dh;
    for (int64_t p = 0; p < L; p++)
        for (int64_t j = 0; j < dh; j++) {
            double angle = (double)p * pow(10000.0, -2.0 * (double)(j % h) / (double)dh);
            cs[p * dh + j] = (float)cos(angle), sn[p * dh + j] = (float)sin(angle);
        }
    kiln_attrs ct = {.dtype = KILN_F32, .rank = 2, .shape = {L, dh}, .values = cs, .n_values = L * dh};
    uint32_t cos_t = add(r, KILN_OP_CONSTANT, NULL, 0, &ct);
    ct.values = sn;
    uint32_t sin_t = add(r, KILN_OP_CONSTANT, NULL, 0, &ct);
    free(cs);
    kiln_attrs s1 = {.axis = 3, .start = 0, .end = h, .step = 1}, s2 = {.axis = 3, .start = h, .end = dh, .step = 1};
    uint32_t x1 = add(r, KILN_OP_SLICE, &x, 1, &s1), x2 = add(r, KILN_OP_SLICE, &x, 1, &s2);
    uint32_t parts[2] = {add(r, KILN_OP_NEG, &x2, 1, NULL), x1};
    kiln_attrs cat = {.axis = 3};
    uint32_t rot = add(r, KILN_OP_CONCAT, parts, 2, &cat);
    return add2(r, KILN_OP_ADD, add2(r, KILN_OP_MUL, x, cos_t), add2(r, KILN_OP_MUL, rot, sin_t));
}

static void build(rgraph *r, const rcase *c)
{
    memset(r, 0, sizeof *r);
    kiln_graph_init(&r->g, "rope");
    kiln_diags_init(&r->d);
    uint32_t q = heads(r, c, c->T, c->dh), k = heads(r, c, c->S, c->dh), v = heads(r, c, c->S, c->dv);
    uint32_t wrt[3] = {r->in[0], r->in[1], r->in[2]};
    uint32_t in[4] = {rope(r, q, c->T, c->dh), c->rope_k ? rope(r, k, c->S, c->dh) : k, v}, n_in = 3;
    kiln_attrs at = {.scalar = 1.0 / sqrt((double)c->dh), .causal = c->causal, .has_mask = c->mask};
    if (c->mask) in[n_in++] = input(r, 2, (int64_t[]){c->B, c->S}, true);
    uint32_t y = add(r, KILN_OP_ATTENTION, in, n_in, &at); /* (B, H, T, dv) */
    if (c->split_heads) {
        kiln_attrs tr = {.perm = {0, 2, 1, 3}};
        y = add(r, KILN_OP_TRANSPOSE, &y, 1, &tr);
        kiln_attrs rs = {.rank = 3, .shape = {c->B, c->T, c->H * c->dv}};
        y = add(r, KILN_OP_RESHAPE, &y, 1, &rs);
    }
    r->y = y;
    const kiln_type *yt = &r->g.nodes[y].type;
    uint32_t gin = input(r, yt->rank, yt->dims, false);
    kiln_attrs all = {.n_axes = yt->rank};
    for (int d = 0; d < yt->rank; d++) all.axes[d] = d;
    uint32_t prod = add2(r, KILN_OP_MUL, y, gin);
    uint32_t loss = add(r, KILN_OP_SUM, &prod, 1, &all);
    if (!kiln_autodiff(&r->g, loss, wrt, 3, r->grads, &r->d)) fail_with_diags(&r->d, "kiln_autodiff");
    kiln_graph_add_output(&r->g, "y", y);
    kiln_graph_add_output(&r->g, "dq", r->grads[0]);
    kiln_graph_add_output(&r->g, "dk", r->grads[1]);
    kiln_graph_add_output(&r->g, "dv", r->grads[2]);
}

static void rgraph_free(rgraph *r)
{
    for (uint32_t i = 0; i < r->n_in; i++) free(r->data[i]);
    kiln_graph_free(&r->g);
    kiln_diags_free(&r->d);
}

static const char *case_str(const rcase *c, char *buf, size_t size)
{
    snprintf(buf, size, "B=%lld H=%lld T=%lld S=%lld dh=%lld dv=%lld%s%s%s%s", (long long)c->B, (long long)c->H,
             (long long)c->T, (long long)c->S, (long long)c->dh, (long long)c->dv, c->causal ? " causal" : "",
             c->mask ? " mask" : "", c->rope_k ? " rope q,k" : " rope q", c->split_heads ? " (B,T,H·d)" : "");
    return buf;
}

static bool is_rope_op(kiln_op op)
{
    return op == KILN_OP_SLICE || op == KILN_OP_CONCAT || op == KILN_OP_NEG || op == KILN_OP_UNSLICE;
}

/* The schedule: no kernel of its own for a rotation's node; one attention kernel, one
 * attention_grad kernel; returns the kernel count. */
static int check_schedule(const rcase *c, const kiln_compiled *comp)
{
    char buf[200];
    const kiln_kernel_schedule *s = &comp->sched;
    const kiln_graph *g = comp->g;
    int n_att = 0, n_grad = 0;
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        n_att += kn->kind == KILN_KERNEL_ATTENTION;
        n_grad += kn->kind == KILN_KERNEL_ATTENTION_GRAD;
        if (kn->kind == KILN_KERNEL_ATTENTION_GRAD) continue; /* holds the rotations' gradients */
        for (uint32_t i = 0; i < kn->n; i++)
            if (is_rope_op(g->nodes[s->members[kn->first + i]].op))
                fail_msg("%s: kernel %u computes %s %%%u", case_str(c, buf, sizeof buf), k,
                         kiln_op_table[g->nodes[s->members[kn->first + i]].op].name, s->members[kn->first + i]);
    }
    uint32_t n_rope = 0;
    for (uint32_t id = 0; id < g->n_nodes; id++) n_rope += s->rope[id] == KILN_ROPE_RESULT;
    if (n_att != 1 || n_grad != 1 || n_rope != (c->rope_k ? 2u : 1u))
        fail_msg("%s: %d attention, %d attention_grad kernels, %u rotations on load", case_str(c, buf, sizeof buf), n_att,
                 n_grad, n_rope);
    return (int)s->n_kernels;
}

static void compare(const rcase *c, const char *what, const float *got, const float *want, int64_t n)
{
    double scale = 1e-3;
    for (int64_t i = 0; i < n; i++)
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= 1e-4 * scale)) {
            char buf[200];
            fail_msg("%s, %s: element %lld of %lld: got %.9g, want %.9g (scale %.3g)", case_str(c, buf, sizeof buf),
                     what, (long long)i, (long long)n, got[i], want[i], scale);
        }
}

/* Compiles and runs the case on 1 and 2 threads against the interpreter; returns the
 * schedule's kernel count. */
static int check_case(const rcase *c)
{
    rgraph r;
    build(&r, c);
    void **values = calloc(r.g.n_nodes, sizeof *values);
    for (uint32_t i = 0; i < r.n_in; i++) values[r.in[i]] = r.data[i];
    if (!kiln_interp_run(&r.g, values, false, 0, &r.d)) fail_with_diags(&r.d, "kiln_interp_run");

    kiln_compile_request req = {.g = &r.g, .inputs = r.in, .n_inputs = r.n_in, .name = "t"};
    kiln_compiled comp;
    if (!kiln_compile_graph(&req, &comp, &r.d)) fail_with_diags(&r.d, "kiln_compile_graph");
    /* (T = 1: the tables' one row is cos 1, sin 0 and simplify drops x·1: no rotation left to match) */
    int n_kernels = c->T > 1 ? check_schedule(c, &comp) : 0;

    void *ws = kiln_aligned_alloc((size_t)comp.workspace_bytes + 64);
    float *outs[4], *first[4];
    int64_t sizes[4];
    void *args[16];
    int k = 0;
    args[k++] = NULL; /* no parameters */
    args[k++] = ws;
    for (uint32_t i = 0; i < r.n_in; i++) args[k++] = r.data[i];
    for (uint32_t o = 0; o < r.g.n_outputs; o++) {
        sizes[o] = kiln_type_numel(&r.g.nodes[r.g.outputs[o].node].type);
        outs[o] = malloc((size_t)sizes[o] * sizeof(float));
        args[k++] = outs[o];
    }
    assert_int_equal(k, comp.n_args);
    while (k < 16) args[k++] = NULL;
    typedef void *P;
    for (int threads = 1; threads <= 2; threads++) {
        kiln_threads_set(threads);
        memset(ws, 0xFF, (size_t)comp.workspace_bytes);
        for (uint32_t o = 0; o < r.g.n_outputs; o++) memset(outs[o], 0xFF, (size_t)sizes[o] * sizeof(float));
        int rc = ((int (*)(P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P))comp.entry)(
            args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10],
            args[11], args[12], args[13], args[14], args[15]);
        assert_int_equal(rc, 0);
        for (uint32_t o = 0; o < r.g.n_outputs; o++) {
            if (threads == 1) {
                first[o] = malloc((size_t)sizes[o] * sizeof(float));
                memcpy(first[o], outs[o], (size_t)sizes[o] * sizeof(float));
            } else if (memcmp(first[o], outs[o], (size_t)sizes[o] * sizeof(float))) {
                char buf[200];
                fail_msg("%s: %s differs between 1 and 2 threads", case_str(c, buf, sizeof buf), r.g.outputs[o].name);
            }
        }
    }
    kiln_threads_set(1);
    for (uint32_t o = 0; o < r.g.n_outputs; o++) {
        compare(c, r.g.outputs[o].name, outs[o], values[r.g.outputs[o].node], sizes[o]);
        free(outs[o]);
        free(first[o]);
    }
    kiln_aligned_free(ws);
    kiln_compiled_free(&comp);
    for (uint32_t i = 0; i < r.n_in; i++) values[r.in[i]] = NULL;
    kiln_interp_free_values(&r.g, values);
    free(values);
    rgraph_free(&r);
    return n_kernels;
}

/* Head dims 8…96, T not a multiple of the block, causal and not, padding masks, T ≠ S. */
static void test_sizes(void **state)
{
    (void)state;
    const rcase cases[] = {
        {2, 2, 33, 33, 8, 8, true, false, true, true},
        {1, 3, 7, 7, 16, 16, false, true, true, true},
        {2, 2, 50, 50, 32, 32, true, true, true, true},
        {1, 1, 100, 100, 64, 64, false, false, true, true},
        {1, 2, 37, 37, 96, 96, true, false, true, true},
        {2, 1, 1, 1, 16, 16, true, true, true, true},
        {1, 2, 20, 45, 16, 8, false, true, true, true},   /* T ≠ S: queries 0…T−1, keys 0…S−1 */
        {1, 2, 33, 33, 32, 32, true, false, false, true}, /* rope on q only */
        {2, 2, 40, 40, 16, 16, true, true, true, false},  /* q, k given as (B, H, T, d) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
}

/* The frontend's layout, one attention with rope on q and k and its gradients: the
 * projections' head splits are strided views, the rotations and their gradients run
 * inside the two attention kernels (the forward, with attention_lse and the head merge;
 * the backward, with dq, dk, dv, both rotation gradients and the three head merges).
 * The other 4 kernels put the outputs — reshape views of those results — into the
 * caller's buffers. (The rotations as kernels of their own: 5 per rotation, 7 per
 * rotation gradient.) */
#define ROPE_ATTENTION_KERNELS 6
static void test_kernel_count(void **state)
{
    (void)state;
    rcase c = {1, 2, 16, 16, 8, 8, true, false, true, true};
    int n = check_case(&c);
    if (n != ROPE_ATTENTION_KERNELS) fail_msg("%d kernels, expected %d", n, ROPE_ATTENTION_KERNELS);
}

int main(void)
{
    kiln_threads_set(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_kernel_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
