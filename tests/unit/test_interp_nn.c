/* test_interp_nn.c — the reference interpreter's composite ops against numbers worked
 * out with numpy in float64: softmax and log_softmax (stable at ±1000), layernorm,
 * attention (causal, key masks, biases, rows with no visible key, no keys at all),
 * cross entropy (ignore_index, label smoothing, bad targets), and the ops autodiff
 * emits (erf, unslice, scatter_add, the layernorm, attention and cross-entropy
 * gradients, dropout's mask following its stream). Fixture: interp_fixture.h. */
#include "interp_fixture.h"

/* ---- softmax, log_softmax, layernorm -------------------------------------------------------------- */

static const float SM_IN[6] = {1.0f, 2.0f, 3.0f, 1000.0f, 1000.0f, -1000.0f};

static void test_softmax_last_axis_stable(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_SOFTMAX, &(kiln_attrs){.axis = -1}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {0.09003057f, 0.24472848f, 0.66524094f, 0.5f, 0.5f, 0.0f});
}

static void test_softmax_axis0(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_SOFTMAX, &(kiln_attrs){.axis = 0}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 0.0f});
}

static void test_log_softmax(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_LOG_SOFTMAX, &(kiln_attrs){.axis = 1}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    /* finite even where softmax underflows to 0 */
    EXPECT_F32(f, y, {-2.407606f, -1.407606f, -0.40760598f, -0.6931472f, -0.6931472f, -2000.6931f});
}

static void test_layernorm(void **state)
{
    fix *f = *state;
    static const float x[8] = {1.0f, 2.0f, 4.0f, 7.0f, -1.0f, 0.5f, 0.25f, 3.0f};
    static const float w[4] = {1.0f, 0.5f, 2.0f, -1.0f};
    static const float b[4] = {0.0f, 0.1f, -0.2f, 0.3f};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM, &a, INS(IN_F32(f, x, 2, 4), IN_F32(f, w, 4), IN_F32(f, b, 4)));
    run(f);
    EXPECT_F32(f, y, {-1.0910884f, -0.22732653f, 0.23643537f, -1.2275238f,
                      -1.1629696f, 0.035390582f, -0.80302125f, -1.293699f});
}

/* A constant row has zero variance: the output is the bias, with eps keeping it finite. */
static void test_layernorm_constant_row(void **state)
{
    fix *f = *state;
    static const float x[3] = {5, 5, 5};
    static const float w[3] = {2, 2, 2};
    static const float b[3] = {0.5f, -1, 0};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM, &a, INS(IN_F32(f, x, 3), IN_F32(f, w, 3), IN_F32(f, b, 3)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0.5f, -1, 0});
}

/* ---- attention ------------------------------------------------------------------------------------ */

/* q, k (1,2,3,4), v (1,2,3,2): B=1, H=2, T=S=3, dh=4, dv=2 (numpy normals rounded). */
static const float AQ[24] = {0.35f, 0.82f, 0.33f, -1.3f, 0.91f, 0.45f, -0.54f, 0.58f, 0.36f, 0.29f, 0.03f, 0.55f,
                             -0.74f, -0.16f, -0.48f, 0.6f, 0.04f, -0.29f, -0.78f, -0.26f, 0.01f, -0.28f, 1.29f, 1.01f};
static const float AK[24] = {-2.71f, -1.89f, -0.17f, -0.42f, 0.21f, 0.22f, 2.12f, -1.11f, -0.38f, 2.04f, 0.65f, 0.66f,
                             -0.51f, -1.65f, 0.17f, 0.11f, -1.23f, -0.68f, -0.07f, -0.94f, -0.1f, 0.1f, 0.04f, -0.51f};
static const float AV[12] = {0.59f, 0.89f, 0.32f, -0.82f, 0.73f, -0.5f, 0.88f, -1.07f, 0.91f, -0.02f, -1.25f, -0.31f};

static uint32_t attention(fix *f, bool causal, const float *mask, const float *bias, int bias_rank,
                          const int64_t *bias_dims, int64_t T)
{
    kiln_attrs a = {0};
    a.scalar = 0.5; /* 1/√dh */
    a.causal = causal;
    a.has_mask = mask != NULL;
    a.has_bias = bias != NULL;
    uint32_t in[5], n = 0;
    in[n++] = IN_F32(f, AQ, 1, 2, T, 4); /* the first T queries */
    in[n++] = IN_F32(f, AK, 1, 2, 3, 4);
    in[n++] = IN_F32(f, AV, 1, 2, 3, 2);
    if (mask) in[n++] = IN_F32(f, mask, 1, 3);
    if (bias) in[n++] = input(f, KILN_F32, bias_rank, bias_dims, bias);
    return node(f, KILN_OP_ATTENTION, &a, n, in);
}

static void test_attention_plain(void **state)
{
    fix *f = *state;
    uint32_t y = attention(f, false, NULL, NULL, 0, NULL, 3);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(1, 2, 3, 2));
    EXPECT_F32(f, y, {0.46119744f, -0.60510176f, 0.6208339f, -0.45298198f, 0.5872939f, -0.38525566f,
                      0.36130342f, -0.5000971f, 0.25114033f, -0.46064043f, 0.31530425f, -0.6319224f});
}

static void test_attention_causal(void **state)
{
    fix *f = *state;
    uint32_t y = attention(f, true, NULL, NULL, 0, NULL, 3);
    run(f);
    /* query 0 sees only key 0: its output is v[0] exactly */
    EXPECT_F32(f, y, {0.59f, 0.89f, 0.39341587f, -0.3550327f, 0.5872939f, -0.38525566f,
                      0.88f, -1.07f, 0.89556265f, -0.52530867f, 0.31530425f, -0.6319224f});
}

static void test_attention_key_mask(void **state)
{
    fix *f = *state;
    static const float mask[3] = {1, 0, 1};
    uint32_t y = attention(f, false, mask, NULL, 0, NULL, 3);
    run(f);
    EXPECT_F32(f, y, {0.7034504f, -0.23640017f, 0.71383643f, -0.3395186f, 0.6999827f, -0.20197129f,
                      0.048888385f, -0.7734532f, -0.12422797f, -0.7116839f, 0.14457671f, -0.8075955f});
}

/* causal + mask {0,1,1} leaves query 0 no key: zero output, not NaN. A (T,S) bias
 * broadcasts over batch and heads. */
static void test_attention_causal_mask_bias_fully_masked_row(void **state)
{
    fix *f = *state;
    static const float mask[3] = {0, 1, 1};
    static const float bias[9] = {0.5f, -1.0f, 0.25f, 0.0f, 1.0f, -0.5f, 2.0f, 0.0f, 0.0f};
    uint32_t y = attention(f, true, mask, bias, SHAPE(3, 3), 3);
    run(f);
    EXPECT_F32(f, y, {0.0f, 0.0f, 0.32f, -0.82f, 0.58681333f, -0.61175543f,
                      0.0f, 0.0f, 0.91f, -0.02f, -0.2693751f, -0.17834203f});
}

/* A per-head (H,T,S) bias, no mask. */
static void test_attention_head_bias(void **state)
{
    fix *f = *state;
    static const float bias[18] = {0.05f, 0.27f, -0.98f, -1.11f, 0.2f, -0.47f, 0.24f, 0.76f, -1.65f,
                                   0.25f, 1.22f, -0.3f, -0.81f, 0.75f, 0.25f, 0.9f, -0.35f, -1.48f};
    uint32_t y = attention(f, false, NULL, bias, SHAPE(2, 3, 3), 3);
    run(f);
    EXPECT_F32(f, y, {0.38489404f, -0.6607004f, 0.5646483f, -0.57015324f, 0.42223346f, -0.43177265f,
                      0.6940923f, -0.32192934f, 0.26763418f, -0.22640868f, 0.79469216f, -0.92610115f});
}

/* T = 2 queries, S = 3 keys, causal top-left aligned: query i sees keys j <= i. */
static void test_attention_causal_fewer_queries(void **state)
{
    fix *f = *state;
    static float q[16];
    /* the first two queries of each head */
    memcpy(q, AQ, 8 * sizeof(float));
    memcpy(q + 8, AQ + 12, 8 * sizeof(float));
    kiln_attrs a = {0};
    a.scalar = 0.5;
    a.causal = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2, 4), IN_F32(f, AK, 1, 2, 3, 4), IN_F32(f, AV, 1, 2, 3, 2)));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(1, 2, 2, 2));
    EXPECT_F32(f, y, {0.59f, 0.89f, 0.39341587f, -0.3550327f, 0.88f, -1.07f, 0.89556265f, -0.52530867f});
}

/* B = 2, H = 2 with a different key mask per batch row (the mask has no head dim). */
static void test_attention_mask_per_batch(void **state)
{
    fix *f = *state;
    static float q[16], k[24], v[12];
    for (int i = 0; i < 16; i++) q[i] = (float)(i * 0.1 - 0.7);
    for (int i = 0; i < 24; i++) k[i] = (float)(i * 0.05 - 0.5);
    for (int i = 0; i < 12; i++) v[i] = (float)(i * 0.5);
    static const float mask[6] = {1, 1, 0, 0, 1, 1};
    kiln_attrs a = {0};
    a.scalar = 1;
    a.has_mask = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 2, 2, 2, 2), IN_F32(f, k, 2, 2, 3, 2), IN_F32(f, v, 2, 2, 3, 1),
                          IN_F32(f, mask, 2, 3)));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 2, 2, 1));
    EXPECT_F32(f, y, {0.23377284f, 0.2387576f, 1.7437513f, 1.74875f, 3.7537496f, 3.7587464f, 5.2637362f, 5.268715f});
}

/* Rank 3 (H, T, dh) with one key and a -inf bias: a row with no finite score is zero. */
static void test_attention_rank3_and_inf_bias(void **state)
{
    fix *f = *state;
    static const float q[4] = {1, 2, 3, 4};   /* (1,2,2) */
    static const float k[2] = {1, 1};         /* (1,1,2) */
    static const float v[3] = {5, 6, 7};      /* (1,1,3) */
    static const float bias[2] = {0, -INFINITY}; /* (2,1): per query */
    kiln_attrs a = {0};
    a.scalar = 1;
    a.has_bias = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2), IN_F32(f, k, 1, 1, 2), IN_F32(f, v, 1, 1, 3), IN_F32(f, bias, 2, 1)));
    run(f);
    EXPECT_F32_EXACT(f, y, {5, 6, 7, 0, 0, 0});
}

/* No keys at all (S = 0): every row is empty, so zero. */
static void test_attention_no_keys(void **state)
{
    fix *f = *state;
    static const float q[4] = {1, 2, 3, 4};
    kiln_attrs a = {0};
    a.scalar = 1;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2), IN_F32(f, NULL, 1, 0, 2), IN_F32(f, NULL, 1, 0, 2)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 0, 0, 0});
}

/* ---- cross_entropy ------------------------------------------------------------------------------- */

static const float CE_LOGITS[12] = {2.0f, 1.0f, 0.1f, 0.5f, 2.5f, -1.0f, 0.0f, 0.0f, 0.0f, 1.0f, -1.0f, 3.0f};

static uint32_t cross_entropy(fix *f, const int32_t *targets, double smoothing)
{
    kiln_attrs a = {0};
    a.ignore_index = -100;
    a.scalar = smoothing;
    return node(f, KILN_OP_CROSS_ENTROPY, &a, INS(IN_F32(f, CE_LOGITS, 4, 3), IN_I32(f, targets, 4)));
}

static void test_cross_entropy_mean(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, 2, 2};
    uint32_t y = cross_entropy(f, t, 0);
    run(f);
    expect_shape(f, y, KILN_F32, 0, NULL);
    EXPECT_F32(f, y, {0.45293805f});
}

static void test_cross_entropy_ignore_index(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, -100, 2};
    uint32_t y = cross_entropy(f, t, 0);
    run(f);
    EXPECT_F32(f, y, {0.23771328f});
}

static void test_cross_entropy_label_smoothing(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, -100, 2};
    static const int32_t t2[4] = {0, 1, 2, 2};
    uint32_t y = cross_entropy(f, t, 0.1);
    uint32_t full = cross_entropy(f, t2, 1.0); /* only the uniform part */
    run(f);
    EXPECT_F32(f, y, {0.39771327f});
    EXPECT_F32(f, full, {1.652938f});
}

static void test_cross_entropy_all_ignored_is_nan(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {-100, -100, -100, -100};
    uint32_t y = cross_entropy(f, t, 0);
    uint32_t z = cross_entropy(f, t, 0.2);
    run(f);
    EXPECT_F32_EXACT(f, y, {NAN});
    EXPECT_F32_EXACT(f, z, {NAN});
}

static void test_cross_entropy_bad_target_is_error(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 3, 1, 1};
    cross_entropy(f, t, 0);
    expect_run_error(f, "target 3", "[0, 3)");
}

/* Higher-rank logits (2,1,3) with targets (2,1), and a custom ignore_index. */
static void test_cross_entropy_rank3_custom_ignore(void **state)
{
    fix *f = *state;
    static const int32_t t[2] = {2, 1};
    kiln_attrs a = {0};
    a.ignore_index = 2;
    uint32_t y = node(f, KILN_OP_CROSS_ENTROPY, &a, INS(IN_F32(f, CE_LOGITS, 2, 1, 3), IN_I32(f, t, 2, 1)));
    run(f);
    /* only row 1 counts: lse(0.5, 2.5, -1) − 2.5 */
    double lse = log(exp(0.5) + exp(2.5) + exp(-1.0));
    float want = (float)(lse - 2.5);
    expect_f32_tol(f, y, &want, 1, 4e-7);
}

/* ---- the ops autodiff emits --------------------------------------------------------------------- */

static void test_erf(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_ERF, UX);
    run(f);
    EXPECT_F32(f, y, {-0.99997791f, -0.520499878f, 0.0f, 0.27632639f, 0.842700793f, 0.999593048f});
}

/* the slice [::-3] of a (2, 5) along axis 1 takes columns 4 and 1: they come back there */
static void test_unslice_negative_step(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(2, 5));
    a.axis = 1, a.step = -3;
    kiln_slice_normalize(5, false, 0, false, 0, -3, &a.start, &a.end);
    uint32_t y = node(f, KILN_OP_UNSLICE, &a, INS(IN_F32(f, x, 2, 2)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 2, 0, 0, 1, 0, 4, 0, 0, 3});
}

/* rows 0 and 2 of g go to table row 2 and add up; rows 1 and 3 of the table get nothing */
static void test_scatter_add_duplicates(void **state)
{
    fix *f = *state;
    static const float g[6] = {1, 2, 3, 4, 5, 6};
    static const int32_t idx[3] = {2, 0, 2};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(4, 2));
    uint32_t y = node(f, KILN_OP_SCATTER_ADD, &a, INS(IN_F32(f, g, 3, 2), IN_I32(f, idx, 3)));
    run(f);
    EXPECT_F32_EXACT(f, y, {3, 4, 0, 0, 6, 8, 0, 0});
}

static void test_scatter_add_bad_index_is_error(void **state)
{
    fix *f = *state;
    static const float g[2] = {1, 2};
    static const int32_t idx[2] = {1, 4};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(4));
    node(f, KILN_OP_SCATTER_ADD, &a, INS(IN_F32(f, g, 2), IN_I32(f, idx, 2)));
    expect_run_error(f, "index 4", "out of range");
}

/* numpy float64: dx = inv·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)), ĝ = g·w */
static void test_layernorm_grad(void **state)
{
    fix *f = *state;
    static const float x[6] = {1, 2, 4, 0.5f, -1, 3}, w[3] = {0.5f, -2, 1.5f}, g[6] = {1, -1, 0.5f, 2, 0, -1};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM_GRAD, &a, INS(IN_F32(f, x, 2, 3), IN_F32(f, w, 3), IN_F32(f, g, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {-0.486795575f, 0.730193577f, -0.243398002f, 0.618459931f, -0.386535463f, -0.231924469f});
}

/* q, k, v (1,1,3,2), causal, key 1 masked, a bias over the keys: queries 0 and 1 see only
 * key 0 (a one-key softmax passes no gradient to the scores), query 2 sees keys 0 and 2.
 * Expected values from numpy in float64. */
static uint32_t attention_grad(fix *f, kiln_wrt wrt)
{
    static const float q[6] = {0.5f, -1, 1, 2, -0.5f, 0.25f}, k[6] = {1, 0, 0.5f, 0.5f, -1, 1};
    static const float v[6] = {1, 2, 3, -1, 0, 1}, mask[3] = {1, 0, 1}, bias[3] = {0.1f, -0.2f, 0.3f};
    static const float g[6] = {1, 0.5f, -1, 2, 0.25f, -0.5f};
    kiln_attrs a = {0};
    a.scalar = 0.7, a.causal = true, a.has_mask = true, a.has_bias = true, a.wrt = wrt;
    return node(f, KILN_OP_ATTENTION_GRAD, &a,
                INS(IN_F32(f, q, 1, 1, 3, 2), IN_F32(f, k, 1, 1, 3, 2), IN_F32(f, v, 1, 1, 3, 2),
                    IN_F32(f, mask, 1, 3), IN_F32(f, bias, 3), IN_F32(f, g, 1, 1, 3, 2)));
}

static void test_attention_grad(void **state)
{
    fix *f = *state;
    uint32_t dq = attention_grad(f, KILN_WRT_Q), dk = attention_grad(f, KILN_WRT_K);
    uint32_t dv = attention_grad(f, KILN_WRT_V), ds = attention_grad(f, KILN_WRT_SCORES);
    run(f);
    expect_shape(f, ds, KILN_F32, SHAPE(1, 1, 3, 3));
    expect_f32_tol(f, dq, (const float[]){0, 0, 0, 0, -0.0663974011f, 0.0331987006f}, 6, 1e-6);
    expect_f32_tol(f, dk, (const float[]){0.0165993503f, -0.00829967514f, 0, 0, -0.0165993503f, 0.00829967514f}, 6, 1e-6);
    expect_f32_tol(f, dv, (const float[]){0.0636133465f, 2.37277331f, 0, 0, 0.186386654f, -0.372773307f}, 6, 1e-6);
    expect_f32_tol(f, ds, (const float[]){0, 0, 0, 0, 0, 0, -0.0474267151f, 0, 0.0474267151f}, 9, 1e-6);
}

/* logits (3,3), targets {0, ignored, 2}, ε = 0.1, upstream 2: kept rows get
 * 2/2·(softmax − 0.9·onehot − 0.1/3), the ignored row 0 (numpy float64) */
static void test_cross_entropy_grad(void **state)
{
    fix *f = *state;
    static const float x[9] = {1, 2, 0.5f, 0, 0, 0, -1, 3, 2}, g[1] = {2};
    static const int32_t t[3] = {0, -100, 2};
    kiln_attrs a = {0};
    a.scalar = 0.1, a.ignore_index = -100;
    uint32_t y = node(f, KILN_OP_CROSS_ENTROPY_GRAD, &a, INS(IN_F32(f, x, 3, 3), IN_I32(f, t, 3), input(f, KILN_F32, 0, NULL, g)));
    run(f);
    expect_f32_tol(f, y, (const float[]){-0.702109436f, 0.595198386f, 0.10691105f, 0, 0, 0, -0.0201204464f,
                                         0.688065851f, -0.667945405f}, 9, 1e-6);
}

static void test_cross_entropy_grad_bad_target_is_error(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4}, g[1] = {1};
    static const int32_t t[2] = {0, 2};
    kiln_attrs a = {0};
    a.ignore_index = -100;
    node(f, KILN_OP_CROSS_ENTROPY_GRAD, &a, INS(IN_F32(f, x, 2, 2), IN_I32(f, t, 2), input(f, KILN_F32, 0, NULL, g)));
    expect_run_error(f, "target 2", "out of range");
}

/* interp_impl.h exposes this for tests: dropout's keep decision */
bool kiln_interp_dropout_keep(uint64_t seed, uint32_t stream, int64_t i, double p);

/* dropout's mask follows its stream, not its node: the same stream, the same elements */
static void test_dropout_stream(void **state)
{
    fix *f = *state;
    enum { N = 200 };
    static float x[N], g[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)(i % 5), g[i] = -2.0f;
    kiln_attrs a = {0};
    a.scalar = 0.5;
    uint32_t y = node(f, KILN_OP_DROPOUT, &a, INS(IN_F32(f, x, N)));
    assert_int_equal(f->g.nodes[y].attrs.stream, y); /* the builder's default */
    a.stream = f->g.nodes[y].attrs.stream;
    uint32_t back = node(f, KILN_OP_DROPOUT, &a, INS(IN_F32(f, g, N)));
    run_ok(f, true, 7);
    const float *ry = f->v[y], *rb = f->v[back];
    int kept = 0;
    for (int i = 0; i < N; i++) {
        assert_true((ry[i] != 0) == (rb[i] != 0));
        assert_true((ry[i] != 0) == kiln_interp_dropout_keep(7, (uint32_t)a.stream, i, 0.5));
        kept += ry[i] != 0;
    }
    assert_in_range(kept, 60, 140);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_softmax_last_axis_stable),
        T(test_softmax_axis0),
        T(test_log_softmax),
        T(test_layernorm),
        T(test_layernorm_constant_row),
        T(test_attention_plain),
        T(test_attention_causal),
        T(test_attention_key_mask),
        T(test_attention_causal_mask_bias_fully_masked_row),
        T(test_attention_head_bias),
        T(test_attention_causal_fewer_queries),
        T(test_attention_mask_per_batch),
        T(test_attention_rank3_and_inf_bias),
        T(test_attention_no_keys),
        T(test_cross_entropy_mean),
        T(test_cross_entropy_ignore_index),
        T(test_cross_entropy_label_smoothing),
        T(test_cross_entropy_all_ignored_is_nan),
        T(test_cross_entropy_bad_target_is_error),
        T(test_cross_entropy_rank3_custom_ignore),
        T(test_erf),
        T(test_unslice_negative_step),
        T(test_scatter_add_duplicates),
        T(test_scatter_add_bad_index_is_error),
        T(test_layernorm_grad),
        T(test_attention_grad),
        T(test_cross_entropy_grad),
        T(test_cross_entropy_grad_bad_target_is_error),
        T(test_dropout_stream),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
