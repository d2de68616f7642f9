/* test_generate.c — the generation graphs (frontend/decode.c) against the reference
 * interpreter's full forward pass.
 *
 * For a small decoder with each position kind (sinusoidal, learned, relative, rope,
 * alibi), a random sequence of `context` tokens goes once through the interpreter's plain
 * forward graph: row t of its logits is what the model predicts after tokens 0..t. The
 * compiled prefill then runs over the first P tokens (the rest padded), and the
 * compiled decode step over tokens P..context−1 one at a time, reading and writing the
 * KV cache; the prefill's logits (it computes row P−1's only) and every step's must match the interpreter's
 * rows to float tolerance. A second case reruns the steps from a shorter prefill with the
 * cache still holding the first run's rows past it, which must change nothing (rows past
 * the position are masked). An encoder–decoder (relative positions in the encoder, a
 * padded source, alibi in the decoder, post-norm) gets the same check. Parameters are random (not zero) so that every path —
 * relative-bias tables included — carries signal.
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

enum { CONTEXT = 12, VOCAB = 40 };

static char *model_text(const char *kind)
{
    bool pe = !strcmp(kind, "sinusoidal") || !strcmp(kind, "learned");
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"format\": \"kiln/1\", \"name\": \"g\", \"dims\": {\"B\": 3, \"T\": %d},"
             " \"inputs\": {\"tokens\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"}},"
             " \"layers\": [{\"name\": \"wte\", \"op\": \"embedding\", \"in\": \"tokens\", \"vocab\": %d, \"dim\": 16},"
             " %s%s%s"
             " {\"name\": \"blocks\", \"op\": \"encoder_layer\", \"repeat\": 2, \"heads\": 2, \"hidden\": 32,"
             "  \"norm\": \"pre\", \"causal\": true, \"position\": \"%s\"},"
             " {\"name\": \"ln_f\", \"op\": \"layernorm\"},"
             " {\"name\": \"logits\", \"op\": \"linear\", \"out\": %d}],"
             " \"outputs\": [\"logits\"]}",
             CONTEXT, VOCAB, pe ? "{\"name\": \"wpe\", \"op\": \"pos_encoding\", \"kind\": \"" : "", pe ? kind : "",
             pe ? "\", \"max_len\": 16}," : "", pe ? "none" : kind, VOCAB);
    return buf;
}

static bool load(kiln_model *m, const char *text, int64_t T, kiln_decode_mode mode, kiln_diags *d)
{
    kiln_dim_binding defs[2] = {{"B", 1}, {"T", T}};
    kiln_load_options opt = {defs, 2, NULL, 0, NULL};
    kiln_decode_options dec = {mode, CONTEXT, "tokens"};
    return kiln_model_load_decode(m, text, strlen(text), "g.json", &opt, &dec, d);
}

/* deterministic values in [-0.5, 0.5) */
static float next_value(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1ull << 24)) - 0.5f;
}

typedef int (*prefill_fn)(const float *, float *, void *, const int32_t *, const int32_t *, float *);
typedef int (*step_fn)(const float *, float *, void *, const int32_t *, const int32_t *, float *);

static void compile_entry(kiln_model *m, const char *suffix, kiln_compiled *c)
{
    kiln_graph *g = &m->graph;
    /* the tokens, then the step's position or the prefill's prompt length */
    uint32_t inputs[2] = {m->inputs[0], m->decode_pos != KILN_NONE ? m->decode_pos : m->decode_len};
    kiln_compile_request req = {.g = g, .inputs = inputs, .n_inputs = inputs[1] == KILN_NONE ? 1 : 2,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = "g",
                                .stateful = true, .states = m->kv_states, .n_states = (uint32_t)m->n_kv_states,
                                .suffix = suffix};
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_compile_graph(&req, c, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    kiln_diags_free(&d);
    assert_true(ok);
}

static float max_rel_diff(const float *a, const float *b, int n)
{
    float worst = 0;
    for (int i = 0; i < n; i++) {
        float diff = fabsf(a[i] - b[i]) / (1.0f + fabsf(b[i]));
        if (!(diff <= worst)) worst = diff; /* NaN counts */
    }
    return worst;
}

static void check_kind(const char *kind)
{
    const char *text = model_text(kind);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_model plain, pre, half, step; /* half: the prefill of a prompt-length bucket */
    bool ok = load(&plain, text, CONTEXT, KILN_DECODE_OFF, &d) && load(&pre, text, CONTEXT, KILN_DECODE_PREFILL, &d) &&
              load(&half, text, CONTEXT / 2, KILN_DECODE_PREFILL, &d) && load(&step, text, 1, KILN_DECODE_STEP, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    assert_true(ok);
    kiln_diags_free(&d);
    assert_int_equal(pre.n_kv_states, 4); /* 2 layers × k, v */
    assert_int_equal(step.n_kv_states, 4);
    assert_int_not_equal(step.decode_pos, KILN_NONE);
    assert_int_not_equal(pre.decode_len, KILN_NONE);
    assert_int_equal(step.decode_len, KILN_NONE);
    /* the prefill gives one row of logits: the prompt's last */
    const kiln_type *lt = &pre.graph.nodes[pre.graph.outputs[0].node].type;
    assert_int_equal(lt->rank, 3);
    assert_int_equal(lt->dims[1], 1);
    assert_int_equal(lt->dims[2], VOCAB);

    kiln_compiled cp, ch, cs;
    compile_entry(&pre, "prefill", &cp);
    compile_entry(&half, "prefill_half", &ch);
    compile_entry(&step, "decode_step", &cs);
    assert_int_equal(cp.params_bytes, cs.params_bytes);
    assert_int_equal(cp.optim_bytes, cs.optim_bytes);
    assert_int_equal(ch.params_bytes, cs.params_bytes);
    assert_int_equal(ch.optim_bytes, cs.optim_bytes);
    for (int i = 0; i < pre.n_params; i++) assert_int_equal(cp.param_offsets[i], cs.param_offsets[i]);
    for (int i = 0; i < pre.n_params; i++) assert_int_equal(ch.param_offsets[i], cs.param_offsets[i]);
    for (int i = 0; i < pre.n_kv_states; i++) assert_int_equal(ch.state_offsets[i], cs.state_offsets[i]);

    /* random parameters, shared by the interpreter (per-node pointers into the blob) */
    float *params = kiln_aligned_alloc((size_t)cp.params_bytes);
    float *cache = kiln_aligned_alloc((size_t)cp.optim_bytes);
    int64_t ws = cp.workspace_bytes > cs.workspace_bytes ? cp.workspace_bytes : cs.workspace_bytes;
    ws = ch.workspace_bytes > ws ? ch.workspace_bytes : ws;
    void *work = kiln_aligned_alloc((size_t)(ws ? ws : 64));
    uint64_t seed = 12345;
    for (int64_t i = 0; i < cp.params_bytes / 4; i++) params[i] = next_value(&seed);

    int32_t tokens[CONTEXT];
    for (int i = 0; i < CONTEXT; i++) tokens[i] = (int32_t)((i * 7 + 3) % VOCAB);
    void **values = calloc(plain.graph.n_nodes, sizeof *values);
    for (int i = 0; i < plain.n_params; i++) values[plain.params[i]] = (char *)params + cp.param_offsets[i];
    values[plain.inputs[0]] = tokens;
    kiln_diags_init(&d);
    assert_true(kiln_interp_run(&plain.graph, values, false, 0, &d));
    kiln_diags_free(&d);
    const float *want = values[plain.graph.outputs[0].node]; /* (1, CONTEXT, VOCAB) */

    float logits[VOCAB];
    /* the first run: the half-context bucket's prefill (its rows past CONTEXT/2 zeroed);
     * the second: a shorter prompt through the whole context's, over a used cache */
    for (int P = CONTEXT / 2; P >= 1; P -= CONTEXT / 2 - 1) {
        int32_t padded[CONTEXT] = {0};
        memcpy(padded, tokens, (size_t)P * sizeof *tokens);
        prefill_fn prefill = (prefill_fn)(P == CONTEXT / 2 ? ch.entry : cp.entry);
        int32_t n[1] = {P};
        assert_int_equal(prefill(params, cache, work, padded, n, logits), 0);
        float diff = max_rel_diff(logits, want + (P - 1) * VOCAB, VOCAB);
        if (diff > 2e-5f) fprintf(stderr, "%s: prefill row %d differs by %g\n", kind, P - 1, diff);
        assert_true(diff <= 2e-5f);
        for (int pos = P; pos < CONTEXT; pos++) {
            int32_t tok[1] = {tokens[pos]}, at[1] = {pos};
            assert_int_equal(((step_fn)cs.entry)(params, cache, work, tok, at, logits), 0);
            diff = max_rel_diff(logits, want + pos * VOCAB, VOCAB);
            if (diff > 2e-5f) fprintf(stderr, "%s: step at %d differs by %g\n", kind, pos, diff);
            assert_true(diff <= 2e-5f);
        }
    }
    /* a position past the context is refused by the compiled code, not read wildly; so
     * is a prompt length of 0 or past the prefill's positions */
    int32_t tok[1] = {1}, at[1] = {CONTEXT};
    assert_int_not_equal(((step_fn)cs.entry)(params, cache, work, tok, at, logits), 0);
    int32_t padded[CONTEXT] = {0}, bad[1] = {0};
    assert_int_not_equal(((prefill_fn)cp.entry)(params, cache, work, padded, bad, logits), 0);
    bad[0] = CONTEXT / 2 + 1;
    assert_int_not_equal(((prefill_fn)ch.entry)(params, cache, work, padded, bad, logits), 0);

    values[plain.inputs[0]] = NULL;
    for (int i = 0; i < plain.n_params; i++) values[plain.params[i]] = NULL;
    kiln_interp_free_values(&plain.graph, values);
    free(values);
    kiln_aligned_free(params);
    kiln_aligned_free(cache);
    kiln_aligned_free(work);
    kiln_compiled_free(&cp);
    kiln_compiled_free(&ch);
    kiln_compiled_free(&cs);
    kiln_model_free(&plain);
    kiln_model_free(&pre);
    kiln_model_free(&half);
    kiln_model_free(&step);
}

static void test_sinusoidal(void **state) { (void)state; check_kind("sinusoidal"); }
static void test_learned(void **state) { (void)state; check_kind("learned"); }
static void test_relative(void **state) { (void)state; check_kind("relative"); }
static void test_rope(void **state) { (void)state; check_kind("rope"); }
static void test_alibi(void **state) { (void)state; check_kind("alibi"); }

/* An encoder–decoder: the encoder runs in the prefill (with a padded, masked source),
 * its cross-attention keys and values are stored, and the step reads them; every row
 * must match the interpreter's full forward pass over source and target. */
enum { SRC = 8 };
typedef int (*s2s_prefill_fn)(const float *, float *, void *, const int32_t *, const int32_t *, const int32_t *,
                              const int32_t *, float *);
typedef int (*s2s_step_fn)(const float *, float *, void *, const int32_t *, const int32_t *, const int32_t *, float *);

static bool load_s2s(kiln_model *m, const char *text, int64_t T, kiln_decode_mode mode, kiln_diags *d)
{
    kiln_dim_binding defs[2] = {{"B", 1}, {"T", T}};
    kiln_load_options opt = {defs, 2, NULL, 0, NULL};
    kiln_decode_options dec = {mode, CONTEXT, "tgt_in"};
    return kiln_model_load_decode(m, text, strlen(text), "s2s.json", &opt, &dec, d);
}

static void compile_inputs(kiln_model *m, const char *suffix, const char *const *names, int n, kiln_compiled *c)
{
    uint32_t inputs[4];
    for (int i = 0; i < n; i++) {
        inputs[i] = !strcmp(names[i], "kv.pos")   ? m->decode_pos
                    : !strcmp(names[i], "kv.len") ? m->decode_len
                                                  : kiln_model_find_input(m, names[i]);
        assert_int_not_equal(inputs[i], KILN_NONE);
    }
    kiln_compile_request req = {.g = &m->graph, .inputs = inputs, .n_inputs = (uint32_t)n, .params = m->params,
                                .n_params = (uint32_t)m->n_params, .name = "s", .stateful = true,
                                .states = m->kv_states, .n_states = (uint32_t)m->n_kv_states, .suffix = suffix};
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_compile_graph(&req, c, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    kiln_diags_free(&d);
    assert_true(ok);
}

static void test_seq2seq(void **state)
{
    (void)state;
    static char text[2048];
    snprintf(text, sizeof text,
             "{\"format\": \"kiln/1\", \"name\": \"s\", \"dims\": {\"B\": 2, \"S\": %d, \"T\": %d},"
             " \"inputs\": {\"src\": {\"shape\": [\"B\", \"S\"], \"dtype\": \"i32\"},"
             "  \"src_mask\": {\"shape\": [\"B\", \"S\"], \"dtype\": \"i32\"},"
             "  \"tgt_in\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"}},"
             " \"layers\": [{\"name\": \"se\", \"op\": \"embedding\", \"in\": \"src\", \"vocab\": %d, \"dim\": 16},"
             "  {\"name\": \"sp\", \"op\": \"pos_encoding\", \"kind\": \"sinusoidal\"},"
             "  {\"name\": \"enc\", \"op\": \"encoder_layer\", \"heads\": 2, \"hidden\": 32, \"norm\": \"pre\","
             "   \"mask\": \"src_mask\", \"position\": \"relative\"},"
             "  {\"name\": \"memory\", \"op\": \"layernorm\"},"
             "  {\"name\": \"te\", \"op\": \"embedding\", \"in\": \"tgt_in\", \"vocab\": %d, \"dim\": 16},"
             "  {\"name\": \"tp\", \"op\": \"pos_encoding\", \"kind\": \"learned\", \"max_len\": %d},"
             "  {\"name\": \"dec\", \"op\": \"decoder_layer\", \"repeat\": 2, \"heads\": 2, \"hidden\": 32,"
             "   \"norm\": \"post\", \"memory\": \"memory\", \"memory_mask\": \"src_mask\", \"position\": \"alibi\"},"
             "  {\"name\": \"logits\", \"op\": \"linear\", \"out\": %d}],"
             " \"outputs\": [\"logits\"]}",
             SRC, CONTEXT, VOCAB, VOCAB, CONTEXT, VOCAB);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_model plain, pre, step;
    kiln_dim_binding defs[2] = {{"B", 1}, {"T", CONTEXT}};
    kiln_load_options opt = {defs, 2, NULL, 0, NULL};
    bool ok = kiln_model_load_text(&plain, text, strlen(text), "s2s.json", &opt, &d) &&
              load_s2s(&pre, text, CONTEXT, KILN_DECODE_PREFILL, &d) && load_s2s(&step, text, 1, KILN_DECODE_STEP, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    assert_true(ok);
    kiln_diags_free(&d);
    assert_int_equal(pre.n_kv_states, 8); /* 2 decoder layers × (self, cross) × (k, v) */

    kiln_compiled cp, cs;
    compile_inputs(&pre, "prefill", (const char *const[]){"tgt_in", "kv.len", "src", "src_mask"}, 4, &cp);
    compile_inputs(&step, "decode_step", (const char *const[]){"tgt_in", "kv.pos", "src_mask"}, 3, &cs);
    assert_int_equal(cp.params_bytes, cs.params_bytes);
    assert_int_equal(cp.optim_bytes, cs.optim_bytes);
    float *params = kiln_aligned_alloc((size_t)cp.params_bytes);
    float *cache = kiln_aligned_alloc((size_t)cp.optim_bytes);
    int64_t ws = cp.workspace_bytes > cs.workspace_bytes ? cp.workspace_bytes : cs.workspace_bytes;
    void *work = kiln_aligned_alloc((size_t)(ws ? ws : 64));
    uint64_t seed = 99;
    for (int64_t i = 0; i < cp.params_bytes / 4; i++) params[i] = next_value(&seed);

    int32_t src[SRC] = {0}, src_mask[SRC] = {0}, tgt[CONTEXT];
    for (int i = 0; i < 5; i++) src[i] = (int32_t)(i * 5 + 2) % VOCAB, src_mask[i] = 1; /* 5 tokens, 3 padding */
    for (int i = 0; i < CONTEXT; i++) tgt[i] = (int32_t)((i * 11 + 1) % VOCAB);
    void **values = calloc(plain.graph.n_nodes, sizeof *values);
    for (int i = 0; i < plain.n_params; i++) values[plain.params[i]] = (char *)params + cp.param_offsets[i];
    values[kiln_model_find_input(&plain, "src")] = src;
    values[kiln_model_find_input(&plain, "src_mask")] = src_mask;
    values[kiln_model_find_input(&plain, "tgt_in")] = tgt;
    kiln_diags_init(&d);
    assert_true(kiln_interp_run(&plain.graph, values, false, 0, &d));
    kiln_diags_free(&d);
    const float *want = values[plain.graph.outputs[0].node];

    float logits[VOCAB];
    int P = 3;
    int32_t padded[CONTEXT] = {0};
    memcpy(padded, tgt, (size_t)P * sizeof *tgt);
    int32_t n[1] = {P};
    assert_int_equal(((s2s_prefill_fn)cp.entry)(params, cache, work, padded, n, src, src_mask, logits), 0);
    assert_true(max_rel_diff(logits, want + (P - 1) * VOCAB, VOCAB) <= 2e-5f);
    for (int pos = P; pos < CONTEXT; pos++) {
        int32_t tok[1] = {tgt[pos]}, at[1] = {pos};
        assert_int_equal(((s2s_step_fn)cs.entry)(params, cache, work, tok, at, src_mask, logits), 0);
        float diff = max_rel_diff(logits, want + pos * VOCAB, VOCAB);
        if (diff > 2e-5f) fprintf(stderr, "seq2seq: step at %d differs by %g\n", pos, diff);
        assert_true(diff <= 2e-5f);
    }
    for (int i = 0; i < plain.n_params; i++) values[plain.params[i]] = NULL;
    values[kiln_model_find_input(&plain, "src")] = values[kiln_model_find_input(&plain, "src_mask")] = NULL;
    values[kiln_model_find_input(&plain, "tgt_in")] = NULL;
    kiln_interp_free_values(&plain.graph, values);
    free(values);
    kiln_aligned_free(params);
    kiln_aligned_free(cache);
    kiln_aligned_free(work);
    kiln_compiled_free(&cp);
    kiln_compiled_free(&cs);
    kiln_model_free(&plain);
    kiln_model_free(&pre);
    kiln_model_free(&step);
}

/* An encoder (non-causal self-attention) is refused with a message that says why. */
static void test_encoder_refused(void **state)
{
    (void)state;
    char text[2048];
    snprintf(text, sizeof text, "%s", model_text("rope"));
    char *causal = strstr(text, "\"causal\": true");
    assert_non_null(causal);
    memcpy(causal, "\"causal\":false", 14); /* same length */
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_model m;
    assert_false(load(&m, text, 1, KILN_DECODE_STEP, &d));
    assert_true(d.n >= 1);
    assert_non_null(strstr(d.items[0].message, "not causal"));
    kiln_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sinusoidal), cmocka_unit_test(test_learned), cmocka_unit_test(test_relative),
        cmocka_unit_test(test_rope),       cmocka_unit_test(test_alibi),   cmocka_unit_test(test_seq2seq),
        cmocka_unit_test(test_encoder_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
