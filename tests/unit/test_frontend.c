/* test_frontend.c — the model-file frontend: what good models become, and how bad ones
 * are refused.
 *
 * Model texts are written with single quotes for readability; q() turns them into JSON.
 * Good models check node types, parameter names (the SPEC's contract) and dim binding.
 * Hostile models (one cmocka test each, from a table) assert that loading fails and
 * that the printed diagnostics contain the exact JSON path or line:column, and where it
 * matters the exact number of diagnostics (one problem, one message, no cascades).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* The text with every ' turned into " (tests never need a literal '). malloc'd. */
static char *q(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    return s;
}

/* Everything kiln_diags_print would show, as one malloc'd string. */
static char *diag_text(const kiln_diags *d)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    kiln_diags_print(d, f);
    fclose(f);
    return buf;
}

static bool load(kiln_model *m, const char *single_quoted, const kiln_load_options *opt, kiln_diags *d)
{
    char *text = q(single_quoted);
    bool ok = kiln_model_load_text(m, text, strlen(text), "m.json", opt, d);
    free(text);
    return ok;
}

/* Loads a model that must be valid; fails the test with the diagnostics otherwise. */
static void load_ok(kiln_model *m, const char *single_quoted, const kiln_load_options *opt)
{
    kiln_diags d;
    kiln_diags_init(&d);
    if (!load(m, single_quoted, opt, &d)) {
        char *msg = diag_text(&d);
        fail_msg("expected the model to load:\n%s", msg);
    }
    kiln_diags_free(&d);
}

static const kiln_node *node(const kiln_model *m, uint32_t id)
{
    assert_true(id < m->graph.n_nodes);
    return &m->graph.nodes[id];
}

static void assert_type(const kiln_model *m, uint32_t id, const char *want)
{
    char buf[160];
    assert_string_equal(kiln_type_str(&node(m, id)->type, buf, sizeof buf), want);
}

static uint32_t output(const kiln_model *m, const char *name)
{
    for (uint32_t i = 0; i < m->graph.n_outputs; i++)
        if (strcmp(m->graph.outputs[i].name, name) == 0) return m->graph.outputs[i].node;
    fail_msg("no output '%s'", name);
    return KILN_NONE;
}

#define HEAD "'format': 'kiln/1', 'name': 'm', "

/* ---- good models ------------------------------------------------------------------------ */

static const char *GPT =
    "{" HEAD "'dims': {'B': 4, 'T': 32},"
    " 'inputs': {'tokens': {'shape': ['B', 'T'], 'dtype': 'i32'}, 'targets': {'shape': ['B', 'T'], 'dtype': 'i32'}},"
    " 'layers': ["
    "  {'name': 'wte', 'op': 'embedding', 'in': 'tokens', 'vocab': 17, 'dim': 16},"
    "  {'name': 'wpe', 'op': 'pos_encoding', 'kind': 'learned', 'max_len': 32},"
    "  {'name': 'blocks', 'op': 'encoder_layer', 'repeat': 2, 'heads': 2, 'hidden': 64, 'norm': 'pre',"
    "   'causal': true, 'activation': 'gelu_tanh', 'dropout': 0.0},"
    "  {'name': 'ln_f', 'op': 'layernorm'},"
    "  {'name': 'logits', 'op': 'linear', 'out': 17, 'bias': false, 'tie': 'wte.weight'}],"
    " 'outputs': ['logits'],"
    " 'losses': [{'op': 'cross_entropy', 'in': ['logits', 'targets']}],"
    " 'train': {'optimizer': 'adamw', 'lr': 0.0003, 'weight_decay': 0.1, 'warmup_steps': 100,"
    "           'schedule': 'cosine', 'grad_clip': 1.0},"
    " 'tokenizer': {'kind': 'bpe', 'vocab': 4096}, 'init': {'seed': 7, 'std': 0.01}}";

static void test_gpt_params_and_types(void **state)
{
    kiln_model m;
    load_ok(&m, GPT, NULL);
    static const char *const want[] = {
        "wte.weight", "wpe.weight",
        "blocks.0.ln1.weight", "blocks.0.ln1.bias", "blocks.0.attn.q.weight", "blocks.0.attn.q.bias",
        "blocks.0.attn.k.weight", "blocks.0.attn.k.bias", "blocks.0.attn.v.weight", "blocks.0.attn.v.bias",
        "blocks.0.attn.o.weight", "blocks.0.attn.o.bias", "blocks.0.ln2.weight", "blocks.0.ln2.bias",
        "blocks.0.ff.fc1.weight", "blocks.0.ff.fc1.bias", "blocks.0.ff.fc2.weight", "blocks.0.ff.fc2.bias",
    };
    /* every name of the first block, and the second block's as well, and no logits.weight */
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_not_equal(kiln_model_find_param(&m, want[i]), KILN_NONE);
        if (strncmp(want[i], "blocks.0.", 9) == 0) {
            char other[64];
            snprintf(other, sizeof other, "blocks.1.%s", want[i] + 9);
            assert_int_not_equal(kiln_model_find_param(&m, other), KILN_NONE);
        }
    }
    assert_int_equal(m.n_params, 2 + 2 * 16 + 2);
    assert_int_equal(kiln_model_find_param(&m, "logits.weight"), KILN_NONE);
    assert_int_equal(kiln_model_find_param(&m, "blocks.weight"), KILN_NONE);
    assert_string_equal(node(&m, m.params[0])->attrs.name, "wte.weight"); /* creation order */
    assert_type(&m, kiln_model_find_param(&m, "wte.weight"), "f32[17,16]");

    assert_type(&m, output(&m, "logits"), "f32[4,32,17]");
    assert_int_not_equal(m.graph.loss, KILN_NONE);
    assert_type(&m, m.graph.loss, "f32[]");
    assert_string_equal(m.name, "m");
    assert_int_equal(m.n_inputs, 2);
    assert_int_equal(node(&m, m.inputs[0])->op, KILN_OP_INPUT);
    assert_int_equal(kiln_model_find_input(&m, "targets"), m.inputs[1]);
    assert_int_equal(kiln_model_find_input(&m, "nope"), KILN_NONE);

    assert_int_equal(m.train.optimizer, KILN_OPT_ADAMW);
    assert_int_equal(m.train.schedule, KILN_SCHED_COSINE);
    assert_true(m.train.weight_decay == 0.1 && m.train.grad_clip == 1.0 && m.train.lr == 0.0003);
    assert_true(m.train.beta1 == 0.9 && m.train.beta2 == 0.999 && m.train.eps == 1e-8);
    assert_int_equal(m.train.warmup_steps, 100);
    assert_int_equal(m.train.steps, 0);
    assert_int_equal(m.tokenizer.kind, KILN_TOK_BPE);
    assert_int_equal(m.tokenizer.vocab, 4096);
    assert_int_equal(m.init_seed, 7);
    assert_true(m.init_std == 0.01);
    kiln_model_free(&m);
}

/* a param's normal init has its own std default, 0.02 (SPEC 1.1), whatever the model's
 * init.std; an explicit std is kept */
static void test_param_std_default(void **state)
{
    (void)state;
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {}, 'init': {'seed': 3, 'std': 0.05}, 'layers': ["
            "{'name': 'p', 'op': 'param', 'shape': [3], 'init': 'normal'},"
            "{'name': 'q', 'op': 'param', 'shape': [3], 'init': 'normal', 'std': 0.5},"
            "{'name': 'y', 'op': 'add', 'in': ['p', 'q']}], 'outputs': ['y']}",
            NULL);
    assert_true(node(&m, kiln_model_find_param(&m, "p"))->attrs.init_arg == 0.02);
    assert_true(node(&m, kiln_model_find_param(&m, "q"))->attrs.init_arg == 0.5);
    kiln_model_free(&m);
}

/* "end": 9223372036854775807 (sys.maxsize, ONNX's slice to the end) is an integer, though
 * it reaches the frontend as the double 2^63 */
static void test_slice_to_int64_max(void **state)
{
    (void)state;
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {'x': {'shape': [2, 8], 'dtype': 'f32'}}, 'layers': ["
            "{'name': 'y', 'op': 'slice', 'in': 'x', 'axis': 1, 'start': 2, 'end': 9223372036854775807},"
            "{'name': 'z', 'op': 'slice', 'in': 'x', 'axis': 1, 'start': -9223372036854775808, 'end': 3}],"
            "'outputs': ['y', 'z']}",
            NULL);
    assert_type(&m, output(&m, "y"), "f32[2,6]");
    assert_type(&m, output(&m, "z"), "f32[2,3]");
    kiln_model_free(&m);
}

static void test_primitives(void **state)
{
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {'x': {'shape': [3, 7, 4], 'dtype': 'f32'}, 'i': {'shape': [5], 'dtype': 'i32'}},"
            " 'layers': ["
            "  {'name': 's', 'op': 'slice', 'in': 'x', 'axis': -1, 'start': -3, 'end': -1},"
            "  {'name': 's2', 'op': 'slice', 'in': 'x', 'axis': 1, 'step': -2},"
            "  {'name': 'all', 'op': 'sum', 'in': 'x'},"
            "  {'name': 'none', 'op': 'sum', 'in': 'x', 'axes': []},"
            "  {'name': 'mx', 'op': 'max', 'in': 'x', 'axes': [-1], 'keepdims': true},"
            "  {'name': 'sm', 'op': 'softmax', 'in': 'x'},"
            "  {'name': 'r', 'op': 'reshape', 'in': 'x', 'shape': [-1, 4]},"
            "  {'name': 't', 'op': 'transpose', 'in': 'x', 'perm': [2, 0, 1]},"
            "  {'name': 'mm', 'op': 'matmul', 'in': ['x', 'x'], 'transpose_a': true},"
            "  {'name': 'c', 'op': 'constant', 'shape': [4], 'values': [1, 2, 3.5, -4]},"
            "  {'name': 'k', 'op': 'constant', 'shape': [], 'value': 0.25},"
            "  {'name': 'io', 'op': 'iota', 'shape': [2, 5], 'axis': 1},"
            "  {'name': 'fi', 'op': 'cast', 'in': 'io', 'dtype': 'f32'},"
            "  {'name': 'g', 'op': 'gather', 'in': ['x', 'i'], 'axis': 1},"
            "  {'name': 'cat', 'op': 'concat', 'in': ['x', 'x', 'x'], 'axis': 2},"
            "  {'name': 'b', 'op': 'broadcast', 'in': 'c', 'shape': [2, 3, 4]},"
            "  {'name': 'w', 'op': 'param', 'shape': [4, 2], 'init': 'uniform', 'bound': 0.5},"
            "  {'name': 'p', 'op': 'param', 'shape': [2]},"
            "  {'name': 'd', 'op': 'dropout', 'in': 'x'},"
            "  {'name': 'y', 'op': 'scale', 'in': 'x', 'by': 2},"
            "  {'name': 'tt', 'op': 'tanh', 'repeat': 3}],"
            " 'outputs': ['s', 's2', 'all', 'none', 'mx', 'sm', 'r', 't', 'mm', 'c', 'k', 'io', 'fi', 'g', 'cat',"
            "             'b', 'w', 'd', 'tt']}",
            NULL);
    assert_type(&m, output(&m, "s"), "f32[3,7,2]");
    assert_int_equal(node(&m, output(&m, "s"))->attrs.start, 1);
    assert_int_equal(node(&m, output(&m, "s"))->attrs.end, 3);
    assert_type(&m, output(&m, "s2"), "f32[3,4,4]"); /* 6, 4, 2, 0 */
    assert_type(&m, output(&m, "all"), "f32[]");
    assert_type(&m, output(&m, "none"), "f32[3,7,4]");
    assert_type(&m, output(&m, "mx"), "f32[3,7,1]");
    assert_int_equal(node(&m, output(&m, "sm"))->attrs.axis, 2);
    assert_type(&m, output(&m, "r"), "f32[21,4]");
    assert_type(&m, output(&m, "t"), "f32[4,3,7]");
    assert_type(&m, output(&m, "mm"), "f32[3,4,4]"); /* (7,4)ᵀ·(7,4) batched over 3 */
    assert_type(&m, output(&m, "c"), "f32[4]");
    assert_true(((const float *)node(&m, output(&m, "c"))->attrs.values)[2] == 3.5f);
    assert_type(&m, output(&m, "k"), "f32[]");
    assert_type(&m, output(&m, "io"), "i32[2,5]");
    assert_type(&m, output(&m, "fi"), "f32[2,5]");
    assert_type(&m, output(&m, "g"), "f32[3,5,4]");
    assert_type(&m, output(&m, "cat"), "f32[3,7,12]");
    assert_type(&m, output(&m, "b"), "f32[2,3,4]");
    uint32_t w = kiln_model_find_param(&m, "w");
    assert_int_equal(w, output(&m, "w"));
    assert_int_equal(node(&m, w)->attrs.init, KILN_INIT_UNIFORM);
    assert_true(node(&m, w)->attrs.init_arg == 0.5);
    uint32_t p = kiln_model_find_param(&m, "p");
    assert_int_equal(node(&m, p)->attrs.init, KILN_INIT_NORMAL);
    assert_true(node(&m, p)->attrs.init_arg == 0.02); /* a param's own default */
    assert_true(node(&m, output(&m, "d"))->attrs.scalar == 0.5);
    /* repeat on a primitive: three chained tanh nodes, the last one the output */
    uint32_t tt = output(&m, "tt");
    assert_int_equal(node(&m, tt)->op, KILN_OP_TANH);
    assert_int_equal(node(&m, node(&m, tt)->in[0])->op, KILN_OP_TANH);
    assert_int_equal(node(&m, node(&m, node(&m, tt)->in[0])->in[0])->op, KILN_OP_TANH);
    assert_string_equal(node(&m, tt)->label, "tt.2");
    assert_int_equal(m.graph.loss, KILN_NONE);
    kiln_model_free(&m);
}

static void test_repeat_one_names(void **state)
{
    /* SPEC: `repeat` written, even as 1, gives NAME.0.… (conformance case 026) */
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {'x': {'shape': [2, 3, 8]}},"
            " 'layers': [{'name': 'enc', 'op': 'encoder_layer', 'in': 'x', 'repeat': 1, 'heads': 2, 'hidden': 16},"
            "            {'name': 'head', 'op': 'linear', 'out': 3}],"
            " 'outputs': ['head']}",
            NULL);
    assert_int_not_equal(kiln_model_find_param(&m, "enc.0.attn.q.weight"), KILN_NONE);
    assert_int_equal(kiln_model_find_param(&m, "enc.attn.q.weight"), KILN_NONE);
    assert_int_not_equal(kiln_model_find_param(&m, "head.weight"), KILN_NONE);
    assert_type(&m, m.inputs[0], "f32[2,3,8]"); /* dtype defaults to f32 */
    kiln_model_free(&m);
}

static void test_losses_weighted(void **state)
{
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {'a': {'shape': [4, 6]}, 'b': {'shape': [4, 6]}, 't': {'shape': [4, 6]}},"
            " 'layers': [{'name': 'h', 'op': 'tanh', 'in': 'a'}],"
            " 'outputs': ['h'],"
            " 'losses': [{'op': 'mse', 'in': ['h', 't']},"
            "            {'op': 'bce_logits', 'in': ['h', 't'], 'weight': 0.5},"
            "            {'op': 'infonce', 'in': ['a', 'b'], 'symmetric': false, 'temperature': 0.1}]}",
            NULL);
    const kiln_node *loss = node(&m, m.graph.loss);
    assert_int_equal(loss->op, KILN_OP_ADD);
    assert_type(&m, m.graph.loss, "f32[]");
    assert_string_equal(loss->label, "loss");
    /* (mse + 0.5·bce) + infonce: the middle term is scaled */
    const kiln_node *left = node(&m, loss->in[0]);
    assert_int_equal(left->op, KILN_OP_ADD);
    assert_int_equal(node(&m, left->in[1])->op, KILN_OP_SCALE);
    assert_true(node(&m, left->in[1])->attrs.scalar == 0.5);
    assert_int_equal(node(&m, loss->in[1])->op, KILN_OP_CROSS_ENTROPY); /* a→b only */
    kiln_model_free(&m);

    load_ok(&m,
            "{" HEAD "'inputs': {'x': {'shape': [2, 5]}, 'y': {'shape': [2], 'dtype': 'i32'}},"
            " 'layers': [{'name': 'h', 'op': 'scale', 'in': 'x', 'by': 1}], 'outputs': ['h'],"
            " 'losses': [{'op': 'cross_entropy', 'in': ['h', 'y'], 'ignore_index': 3, 'label_smoothing': 0.1,"
            "             'weight': 2}]}",
            NULL);
    loss = node(&m, m.graph.loss);
    assert_int_equal(loss->op, KILN_OP_SCALE);
    const kiln_node *ce = node(&m, loss->in[0]);
    assert_int_equal(ce->op, KILN_OP_CROSS_ENTROPY);
    assert_int_equal(ce->attrs.ignore_index, 3);
    assert_true(ce->attrs.scalar == 0.1);
    kiln_model_free(&m);
}

static const char *BOUND =
    "{" HEAD "'dims': {'B': 4, 'T': 32, 'D': 8, 'N': null},"
    " 'inputs': {'tokens': {'shape': ['B', 'T'], 'dtype': 'i32'}, 'aux': {'shape': ['B', 'N', 'D']}},"
    " 'layers': [{'name': 'f', 'op': 'cast', 'in': 'tokens', 'dtype': 'f32'}], 'outputs': ['f']}";

static int64_t dim(const kiln_model *m, const char *name)
{
    for (int i = 0; i < m->n_dims; i++)
        if (strcmp(m->dims[i].name, name) == 0) return m->dims[i].value;
    fail_msg("no dim %s", name);
    return -1;
}

static void test_dim_binding(void **state)
{
    /* -D beats a given input, which beats the default; a null dim must be bound */
    kiln_dim_binding defs[] = {{"B", 2}, {"N", 5}};
    kiln_given_input given[] = {{.name = "tokens", .rank = 2, .dims = {3, 7}}};
    kiln_load_options opt = {.defines = defs, .n_defines = 2, .given = given, .n_given = 1};
    kiln_model m;
    load_ok(&m, BOUND, &opt);
    assert_int_equal(dim(&m, "B"), 2);
    assert_int_equal(dim(&m, "T"), 7);
    assert_int_equal(dim(&m, "D"), 8);
    assert_int_equal(dim(&m, "N"), 5);
    assert_type(&m, m.inputs[0], "i32[2,7]");
    assert_type(&m, m.inputs[1], "f32[2,5,8]");
    kiln_model_free(&m);

    /* two given inputs agreeing on B; N from a given input */
    kiln_given_input both[] = {{.name = "tokens", .rank = 2, .dims = {3, 6}},
                               {.name = "aux", .rank = 3, .dims = {3, 9, 8}},
                               {.name = "not_an_input", .rank = 1, .dims = {1}}};
    kiln_load_options opt2 = {.given = both, .n_given = 3};
    load_ok(&m, BOUND, &opt2);
    assert_int_equal(dim(&m, "B"), 3);
    assert_int_equal(dim(&m, "T"), 6);
    assert_int_equal(dim(&m, "N"), 9);
    kiln_model_free(&m);

    /* a later -D of the same dim wins */
    kiln_dim_binding twice[] = {{"B", 2}, {"B", 6}, {"N", 1}};
    kiln_load_options opt3 = {.defines = twice, .n_defines = 3};
    load_ok(&m, BOUND, &opt3);
    assert_int_equal(dim(&m, "B"), 6);
    assert_int_equal(dim(&m, "T"), 32);
    kiln_model_free(&m);
}

static void test_train_groups(void **state)
{
    kiln_model m;
    load_ok(&m,
            "{" HEAD "'inputs': {'x': {'shape': [2, 4]}}, 'layers': [{'name': 'emb', 'op': 'linear', 'in': 'x', 'out': 4},"
            " {'name': 'head', 'op': 'linear', 'in': 'emb', 'out': 2}], 'outputs': ['head'],"
            " 'train': {'optimizer': 'sgd', 'momentum': 0.9, 'lr': 0.1, 'weight_decay': 0.01, 'steps': 10,"
            "   'batch': 4, 'betas': [0.8, 0.99], 'eps': 1e-6, 'min_lr': 0.001, 'schedule': 'linear',"
            "   'freeze': ['emb.*'], 'groups': [{'match': '*.bias', 'weight_decay': 0}, {'match': 'head.*', 'lr_scale': 10}]},"
            " 'tokenizer': {'kind': 'char'}}",
            NULL);
    assert_int_equal(m.train.optimizer, KILN_OPT_SGD);
    assert_true(m.train.momentum == 0.9 && m.train.beta1 == 0.8 && m.train.beta2 == 0.99);
    assert_int_equal(m.train.steps, 10);
    assert_int_equal(m.train.batch, 4);
    assert_int_equal(m.train.n_freeze, 1);
    assert_string_equal(m.train.freeze[0], "emb.*");
    assert_int_equal(m.train.n_groups, 2);
    assert_true(m.train.groups[0].weight_decay == 0 && m.train.groups[0].lr_scale == 1);
    assert_true(m.train.groups[1].weight_decay == 0.01 && m.train.groups[1].lr_scale == 10);
    assert_string_equal(m.train.groups[1].match, "head.*");
    assert_int_equal(m.tokenizer.kind, KILN_TOK_CHAR);
    kiln_model_free(&m);
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/kiln_fe_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *text = q(GPT);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    free(text);
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_true(kiln_model_load(&m, path, NULL, &d));
    assert_string_equal(m.file, path);
    kiln_model_free(&m);
    unlink(path);
    kiln_diags_free(&d);
}

/* ---- hostile files: one table row each ------------------------------------------------------ */

typedef struct hostile {
    const char *name;
    const char *text;    /* single-quoted JSON */
    const char *expect;  /* must appear in the printed diagnostics */
    int count;           /* exact number of diagnostics, or 0 for "at least one" */
    const char *expect2; /* a second required substring, or NULL */
} hostile;

/* One row: name, single-quoted model text, expected text, exact diagnostic count (0: any). */
#define H(name, text, expect, count) {name, text, expect, count, NULL}
#define H2(name, text, expect, count, expect2) {name, text, expect, count, expect2}
#define IN_X "'inputs': {'x': {'shape': [2, 8], 'dtype': 'f32'}}, "
#define SEQ "'inputs': {'x': {'shape': [2, 5, 8], 'dtype': 'f32'}}, "
#define OUT_Y ", 'outputs': ['y']}"

static const hostile cases[] = {
    /* JSON text */
    H("syntax_line_col", "{\n  'format': 'kiln/1',\n  'name': 'm' 'dims': {}\n}", "m.json:3:15: error: JSON syntax error near '\"dims\": {}'", 1),
    H("truncated", "{" HEAD IN_X "\n 'layers': [{'name': 'y', 'op': 'neg'", "m.json:2:38: error: JSON syntax error: unexpected end of file (the '{' at 2:13 is never closed)", 1),
    H("truncated_string", "{" HEAD "\n'layers': [{'name': 'y", "m.json:2:23: error: JSON syntax error: unexpected end of file (the string opened at 2:21 is never closed)", 1),
    H("empty_file", "", "m.json:1:1: error: the file is empty", 1),
    H("whitespace_only", " \n\t ", "m.json:1:1: error: the file is empty", 1),
    H("trailing_garbage", "{" HEAD IN_X "'layers': [], 'outputs': ['x']}\n}", "m.json:2:1: error: JSON syntax error: unexpected text after the top-level value: '}'", 1),
    H("trailing_comma", "{'format': 'kiln/1',\n 'name': 'm',\n}", "m.json:3:1: error: JSON syntax error near '}'", 1),
    H("top_level_list", "[1, 2]", "m.json: error: the top level must be a JSON object, got a list", 1),
    H("duplicate_json_keys", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x', 'op': 'exp'}]" OUT_Y, "m.json:1:112: layers[0].op: error: duplicate key 'op' in one object", 1),
    H("duplicate_top_keys", "{" HEAD "'name': 'n', " IN_X "'layers': []" OUT_Y, "m.json:1:22: name: error: duplicate key 'name'", 1),
    H("raw_newline_in_string", "{'format': 'kiln/1',\n 'name': 'm\n}", "m.json:2:10: error: JSON syntax error: this string is not closed on its line", 1),
    H("tab_in_string", "{'format': 'kiln/1', 'name': 'a\tb'}", "m.json:1:32: error: JSON syntax error: control character 0x09 inside a string", 1),
    H("invalid_utf8", "{'format': 'kiln/1', 'name': '\xffm'}", "m.json:1:31: error: invalid UTF-8 (byte 0xff)", 1),
    H("overlong_utf8", "{'format': 'kiln/1', 'name': 'a\xc0\x80'}", "m.json:1:32: error: invalid UTF-8 (byte 0xc0)", 1),
    H("surrogate_utf8", "{'format': 'kiln/1', 'name': '\xed\xa0\x80'}", "m.json:1:31: error: invalid UTF-8 (byte 0xed)", 1),
    H("nul_escape", "{'format': 'kiln/1', 'name': 'a\\u0000b'}", "m.json:1:32: error: JSON syntax error: \\u0000 (NUL) is not allowed in a string", 1),
    H("control_outside_string", "{'format': 'kiln/1',\x01 'name': 'm'}", "m.json:1:21: error: JSON syntax error: control character 0x01", 1),
    /* top level */
    H("wrong_format", "{'format': 'kiln/2', 'name': 'm', 'layres': 1}", "m.json:1:2: format: error: expected \"kiln/1\", got \"kiln/2\"", 2),
    H("missing_format", "{'name': 'm', " IN_X "'layers': [], 'outputs': ['x']}", "format: error: required key is missing", 1),
    H("bad_model_name", "{'format': 'kiln/1', 'name': 'GPT-2', " IN_X "'layers': [], 'outputs': ['x']}", "name: error: 'GPT-2' must match [a-z_][a-z0-9_]*", 1),
    H("unknown_top_key", "{" HEAD IN_X "'layer': [], 'layers': [], 'outputs': ['x']}", "layer: error: unknown key at the top level (did you mean \"layers\"?)", 1),
    H("missing_layers", "{" HEAD IN_X "'outputs': ['x']}", "layers: error: required key is missing", 1),
    H("layers_not_list", "{" HEAD IN_X "'layers': {}, 'outputs': ['x']}", "layers: error: expected a list of layers, got an object", 1),
    H("layer_not_object", "{" HEAD IN_X "'layers': [3]" OUT_Y, "layers[0]: error: expected a layer object, got 3", 1),
    /* dims and inputs */
    H("unknown_dim", "{" HEAD "'dims': {'B': 2}, 'inputs': {'x': {'shape': ['B', 'Q']}}, 'layers': [], 'outputs': ['x']}", "inputs.x.shape[1]: error: unknown dim 'Q'", 1),
    H("negative_dim", "{" HEAD "'dims': {'B': -3}, 'inputs': {'x': {'shape': ['B']}}, 'layers': [], 'outputs': ['x']}", "dims.B: error: -3 is negative", 1),
    H("unbound_dim", "{" HEAD "'dims': {'T': null}, 'inputs': {'x': {'shape': ['T']}}, 'layers': [], 'outputs': ['x']}", "dims.T: error: has no default and is not bound (give -D T=N", 1),
    H("dim_not_int", "{" HEAD "'dims': {'T': 2.5}, 'inputs': {'x': {'shape': [1]}}, 'layers': [], 'outputs': ['x']}", "dims.T: error: expected an integer (the default size) or null, got 2.5", 1),
    H("input_too_large", "{" HEAD "'inputs': {'x': {'shape': [1e6, 1e6, 1e6]}}, 'layers': [], 'outputs': ['x']}", "inputs.x: error: input 'x': shape f32[1000000,1000000,1000000] is too large", 1),
    H("constant_too_large", "{" HEAD "'layers': [{'name': 'y', 'op': 'constant', 'shape': [1000000, 1000000, 1000000], 'value': 1}]" OUT_Y, "layers[0]: error: constant: shape f32[1000000,1000000,1000000] is too large", 1),
    H("input_bad_dtype", "{" HEAD "'inputs': {'x': {'shape': [2], 'dtype': 'f64'}}, 'layers': [], 'outputs': ['x']}", "inputs.x.dtype: error: expected one of \"f32\", \"i32\", got \"f64\"", 1),
    H("input_bad_name", "{" HEAD "'inputs': {'1x': {'shape': [2]}}, 'layers': [], 'outputs': ['1x']}", "inputs.1x: error: input names must match", 1),
    H("input_unknown_key", "{" HEAD "'inputs': {'x': {'shape': [2], 'dtyp': 'i32'}}, 'layers': [], 'outputs': ['x']}", "inputs.x.dtyp: error: unknown key in an input (expected shape, dtype) (did you mean \"dtype\"?)", 1),
    H("input_shape_float", "{" HEAD "'inputs': {'x': {'shape': [2, 1.5]}}, 'layers': [], 'outputs': ['x']}", "inputs.x.shape[1]: error: expected an integer or a dim name, got 1.5", 1),
    H("input_rank_too_big", "{" HEAD "'inputs': {'x': {'shape': [1,1,1,1,1,1,1,1,1]}}, 'layers': [], 'outputs': ['x']}", "inputs.x.shape: error: rank 9 is over the limit of 8", 1),
    /* layers: names, ops, in */
    H("misspelt_causal", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'encoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16, 'casual': true}]" OUT_Y, "layers[0].casual: error: unknown key for op 'encoder_layer' (did you mean \"causal\"?)", 1),
    H("misspelt_causal_repeated", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 2, 'repeat': 3, 'casual': true}]" OUT_Y, "layers[0].casual: error: unknown key for op 'attention'", 1),
    H("unknown_op", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'lienar', 'in': 'x', 'out': 3}]" OUT_Y, "layers[0].op: error: unknown op 'lienar' (did you mean 'linear'?)", 1),
    H("loss_as_layer", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'mse', 'in': ['x', 'x']}]" OUT_Y, "layers[0].op: error: 'mse' is a loss: list it under \"losses\"", 1),
    H("missing_op", "{" HEAD IN_X "'layers': [{'name': 'y', 'in': 'x'}]" OUT_Y, "layers[0].op: error: required key is missing", 1),
    H("missing_name", "{" HEAD IN_X "'layers': [{'op': 'neg', 'in': 'x'}], 'outputs': ['x']}", "layers[0].name: error: required key is missing", 1),
    H("bad_layer_name", "{" HEAD IN_X "'layers': [{'name': 'a.b', 'op': 'neg', 'in': 'x'}], 'outputs': ['x']}", "layers[0].name: error: 'a.b' must match [A-Za-z_][A-Za-z0-9_]*", 1),
    H("duplicate_layer", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}, {'name': 'y', 'op': 'exp', 'in': 'x'}]" OUT_Y, "layers[1].name: error: 'y' is already the name of layers[0]", 1),
    H("layer_named_like_input", "{" HEAD IN_X "'layers': [{'name': 'x', 'op': 'neg', 'in': 'x'}], 'outputs': ['x']}", "layers[0].name: error: 'x' is already the name of an input", 1),
    H("in_later_layer", "{" HEAD IN_X "'layers': [{'name': 'a', 'op': 'neg', 'in': 'x'}, {'name': 'y', 'op': 'add', 'in': ['a', 'b']}, {'name': 'b', 'op': 'exp', 'in': 'x'}]" OUT_Y, "layers[1].in[1]: error: 'b' is not defined before this layer", 1),
    H("in_self_cycle", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'y'}]" OUT_Y, "layers[0].in: error: 'y' is not defined before this layer", 1),
    H("in_unknown", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'xx'}]" OUT_Y, "layers[0].in: error: 'xx' is not an input or layer (did you mean 'x'?)", 1),
    H("in_not_string", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'add', 'in': ['x', 3]}]" OUT_Y, "layers[0].in[1]: error: expected the name of an input or layer, got 3", 1),
    H("first_layer_no_in", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg'}]" OUT_Y, "layers[0]: error: has no \"in\" and no previous layer", 1),
    H("binary_with_prev", "{" HEAD IN_X "'layers': [{'name': 'a', 'op': 'neg', 'in': 'x'}, {'name': 'y', 'op': 'add'}]" OUT_Y, "layers[1]: error: 'add' takes 2 inputs, got 1 (without \"in\" a layer takes the previous layer's output)", 1),
    H("source_with_in", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'constant', 'in': 'x', 'shape': [1], 'value': 1}]" OUT_Y, "layers[0].in: error: 'constant' takes no inputs", 1),
    H("too_many_in", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'concat', 'in': ['x','x','x','x','x','x','x','x','x','x','x','x','x','x','x','x','x']}]" OUT_Y, "layers[0].in: error: 17 inputs; at most 16 are allowed", 1),
    /* repeat */
    H("huge_repeat", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'encoder_layer', 'in': 'x', 'repeat': 1000000000, 'heads': 2, 'hidden': 16}]" OUT_Y, "layers[0].repeat: error: 1000000000 is out of range (1..10000)", 1),
    H("repeat_not_int", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x', 'repeat': 1e300}]" OUT_Y, "layers[0].repeat: error: expected an integer, got 1e+300", 1),
    H("repeat_zero", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x', 'repeat': 0}]" OUT_Y, "layers[0].repeat: error: 0 is out of range", 1),
    H("repeat_changes_shape", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'linear', 'in': 'x', 'out': 4, 'repeat': 2}]" OUT_Y, "layers[0].repeat: error: copies feed each other, so the output must keep the input's type: f32[2,8] becomes f32[2,4]", 1),
    H("repeat_source", "{" HEAD "'layers': [{'name': 'y', 'op': 'param', 'shape': [2], 'repeat': 2}]" OUT_Y, "layers[0].repeat: error: 'param' has no input to repeat on", 1),
    /* attributes of every kind */
    H("heads_string", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 'six'}]" OUT_Y, "layers[0].heads: error: expected an integer, got \"six\"", 1),
    H("heads_fraction", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 1.5}]" OUT_Y, "layers[0].heads: error: expected an integer, got 1.5", 1),
    H("heads_not_dividing", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 3}]" OUT_Y, "layers[0].heads: error: 8 is not divisible by 3", 1),
    H("heads_missing", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x'}]" OUT_Y, "layers[0].heads: error: required key is missing", 1),
    H("bool_as_string", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 2, 'causal': 'yes'}]" OUT_Y, "layers[0].causal: error: expected true or false, got \"yes\"", 1),
    H("number_as_string", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'scale', 'in': 'x', 'by': '2'}]" OUT_Y, "layers[0].by: error: expected a finite number, got \"2\"", 1),
    H("number_overflow", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'scale', 'in': 'x', 'by': 1e999}]" OUT_Y, "layers[0].by: error: expected a finite number, got inf", 1),
    H("string_as_number", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'linear', 'in': 'x', 'out': 4, 'tie': 3}]" OUT_Y, "layers[0].tie: error: expected a string, got 3", 1),
    H("scale_missing_by", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'scale', 'in': 'x'}]" OUT_Y, "layers[0].by: error: required key is missing", 1),
    H("enum_unknown", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'pos_encoding', 'in': 'x', 'kind': 'rotary', 'max_len': 8}]" OUT_Y, "layers[0].kind: error: expected one of \"sinusoidal\", \"learned\", got \"rotary\"", 1),
    H("shape_not_list", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'reshape', 'in': 'x', 'shape': 16}]" OUT_Y, "layers[0].shape: error: expected a shape (a list of integers or dim names), got 16", 1),
    H("shape_negative", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'broadcast', 'in': 'x', 'shape': [3, -2, 8]}]" OUT_Y, "layers[0].shape[1]: error: -2 is negative", 1),
    H("axes_string", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'sum', 'in': 'x', 'axes': [0, 'one']}]" OUT_Y, "layers[0].axes[1]: error: expected an integer, got \"one\"", 1),
    H("axes_out_of_range", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'mean', 'in': 'x', 'axes': [2]}]" OUT_Y, "layers[0].axes[0]: error: axis 2 is out of range for rank 2", 1),
    H("axis_out_of_range", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'softmax', 'in': 'x', 'axis': 5}]" OUT_Y, "layers[0].axis: error: 5 is out of range for rank 2", 1),
    H("ref_not_string", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 2, 'mask': 1}]" OUT_Y, "layers[0].mask: error: expected the name of an input or layer, got 1", 1),
    H("ref_unknown", "{" HEAD SEQ "'layers': [{'name': 'y', 'op': 'attention', 'in': 'x', 'heads': 2, 'mask': 'msk'}]" OUT_Y, "layers[0].mask: error: 'msk' is not an input or layer", 1),
    H("unknown_attr_on_primitive", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'add', 'in': ['x', 'x'], 'axis': 0}]" OUT_Y, "layers[0].axis: error: unknown key for op 'add'", 1),
    /* shapes */
    H("reshape_mismatch", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'reshape', 'in': 'x', 'shape': [3, 5]}]" OUT_Y, "layers[0]: error: reshape: cannot reshape f32[2,8] (16 elements) into f32[3,5]", 1),
    H("reshape_two_free", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'reshape', 'in': 'x', 'shape': [-1, -1]}]" OUT_Y, "layers[0]: error: reshape: more than one -1", 1),
    H("matmul_mismatch", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'matmul', 'in': ['x', 'x']}]" OUT_Y, "layers[0]: error: matmul: inner dims differ: f32[2,8] and f32[2,8]", 1),
    H("dtype_mix", "{" HEAD "'inputs': {'x': {'shape': [2]}, 'i': {'shape': [2], 'dtype': 'i32'}}, 'layers': [{'name': 'y', 'op': 'add', 'in': ['x', 'i']}]" OUT_Y, "layers[0]: error: add: operands f32[2] and i32[2] have different dtypes", 1),
    H("transpose_perm_length", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'transpose', 'in': 'x', 'perm': [1, 0, 2]}]" OUT_Y, "layers[0].perm: error: has 3 entries but the input has rank 2", 1),
    H("slice_step_zero", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'slice', 'in': 'x', 'axis': 1, 'start': 0, 'end': 4, 'step': 0}]" OUT_Y, "layers[0].step: error: must not be 0", 1),
    H("constant_value_count", "{" HEAD "'layers': [{'name': 'y', 'op': 'constant', 'shape': [3], 'values': [1, 2]}]" OUT_Y, "layers[0].values: error: 2 values given for a shape of 3 elements", 1),
    H("constant_both", "{" HEAD "'layers': [{'name': 'y', 'op': 'constant', 'shape': [1], 'values': [1], 'value': 1}]" OUT_Y, "layers[0]: error: constant needs exactly one of \"value\"", 1),
    H("constant_nested_values", "{" HEAD "'layers': [{'name': 'y', 'op': 'constant', 'shape': [2, 2], 'values': [[1, 2], [3, 4]]}]" OUT_Y, "layers[0].values[0]: error: expected a finite number, got a list (values is a flat row-major list)", 1),
    H("constant_f32_overflow", "{" HEAD "'layers': [{'name': 'y', 'op': 'constant', 'shape': [], 'value': 1e300}]" OUT_Y, "layers[0].value: error: 1e+300 does not fit in f32", 1),
    H("param_uniform_no_bound", "{" HEAD "'layers': [{'name': 'y', 'op': 'param', 'shape': [2], 'init': 'uniform'}]" OUT_Y, "layers[0].bound: error: required key is missing", 1),
    H("param_std_with_zeros", "{" HEAD "'layers': [{'name': 'y', 'op': 'param', 'shape': [2], 'init': 'zeros', 'std': 1}]" OUT_Y, "layers[0].std: error: applies only to init \"normal\"", 1),
    H("dropout_p_one", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'dropout', 'in': 'x', 'p': 1.0}]" OUT_Y, "layers[0].p: error: 1 must lie in [0, 1)", 1),
    H("gather_float_indices", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'gather', 'in': ['x', 'x']}]" OUT_Y, "layers[0]: error: gather: indices must be i32", 1),
    H("cast_missing_dtype", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'cast', 'in': 'x'}]" OUT_Y, "layers[0].dtype: error: required key is missing", 1),
    /* outputs */
    H("outputs_missing", "{" HEAD IN_X "'layers': []}", "outputs: error: required key is missing", 1),
    H("outputs_empty", "{" HEAD IN_X "'layers': [], 'outputs': []}", "outputs: error: expected a non-empty list", 1),
    H("outputs_unknown", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}], 'outputs': ['y', 'z']}", "outputs[1]: error: 'z' is not an input or layer", 1),
    H("outputs_twice", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}], 'outputs': ['y', 'y']}", "outputs[1]: error: 'y' is already listed as outputs[0]", 1),
    /* losses */
    H("loss_unknown_op", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}], 'outputs': ['y'], 'losses': [{'op': 'mse_loss', 'in': ['y', 'x']}]}", "losses[0].op: error: unknown loss 'mse_loss'", 1),
    H("loss_with_name", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}], 'outputs': ['y'], 'losses': [{'name': 'l', 'op': 'mse', 'in': ['y', 'x']}]}", "losses[0].name: error: losses have no name", 1),
    H("loss_unknown_key", "{" HEAD IN_X "'layers': [{'name': 'y', 'op': 'neg', 'in': 'x'}], 'outputs': ['y'], 'losses': [{'op': 'mse', 'in': ['y', 'x'], 'wieght': 2}]}", "losses[0].wieght: error: unknown key for loss 'mse' (did you mean \"weight\"?)", 1),
    H("mse_shapes", "{" HEAD "'inputs': {'a': {'shape': [2, 3]}, 'b': {'shape': [3, 2]}}, 'layers': [], 'outputs': ['a'], 'losses': [{'op': 'mse', 'in': ['a', 'b']}]}", "losses[0].in: error: mse needs operands of equal shapes, got f32[2,3] and f32[3,2]", 1),
    H("infonce_shapes", "{" HEAD "'inputs': {'a': {'shape': [4, 6]}, 'b': {'shape': [4, 5]}}, 'layers': [], 'outputs': ['a'], 'losses': [{'op': 'infonce', 'in': ['a', 'b']}]}", "losses[0].in: error: infonce needs a and b of the same shape (B, D) in f32, got f32[4,6] and f32[4,5]", 1),
    H("infonce_temperature", "{" HEAD "'inputs': {'a': {'shape': [4, 6]}}, 'layers': [], 'outputs': ['a'], 'losses': [{'op': 'infonce', 'in': ['a', 'a'], 'temperature': 0}]}", "losses[0].temperature: error: 0 must be positive", 1),
    H("ce_float_targets", "{" HEAD "'inputs': {'a': {'shape': [4, 6]}, 't': {'shape': [4]}}, 'layers': [], 'outputs': ['a'], 'losses': [{'op': 'cross_entropy', 'in': ['a', 't']}]}", "losses[0]: error: cross_entropy: targets must be i32", 1),
    H("loss_weight_inf", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'losses': [{'op': 'mse', 'in': ['x', 'x'], 'weight': -1e999}]}", "losses[0].weight: error: expected a finite number, got -inf", 1),
    H2("loss_missing_in", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'losses': [{'op': 'infonce', 'temperature': 1, 'wieght': 2}]}", "losses[0].in: error: required key is missing", 2, "losses[0].wieght: error: unknown key for loss 'infonce' (did you mean \"weight\"?)"),
    H("loss_arity", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'losses': [{'op': 'mse', 'in': 'x'}]}", "losses[0].in: error: mse takes 2 inputs, got 1", 1),
    /* train, tokenizer, init */
    H("train_lr_negative", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'lr': -1}}", "train.lr: error: -1 must be > 0", 1),
    H("train_betas", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'betas': [0.9, 1.0]}}", "train.betas[1]: error: 1 must be in [0, 1)", 1),
    H("train_betas_count", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'betas': [0.9]}}", "train.betas: error: expected two numbers", 1),
    H("train_unknown_key", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'learning_rate': 0.1}}", "train.learning_rate: error: unknown key in train", 1),
    H("train_optimizer", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'optimizer': 'adam'}}", "train.optimizer: error: expected one of \"adamw\", \"sgd\", got \"adam\"", 1),
    H2("train_steps_fraction", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'steps': 10.5, 'warmup_steps': -1}}", "train.steps: error: expected an integer, got 10.5", 2, "train.warmup_steps: error: -1 must be >= 0"),
    H2("train_group_no_match", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'groups': [{'lr_scale': 2, 'wd': 0}]}}", "train.groups[0].match: error: required key is missing", 2, "train.groups[0].wd: error: unknown key"),
    H2("train_freeze_types", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': {'freeze': ['a.*', 3]}}", "train.freeze[1]: error: expected a glob of parameter names, got 3", 2, "train.freeze[0]: error: 'a.*' matches no parameter of the model"),
    H("train_freeze_typo", "{" HEAD IN_X "'layers': [{'name': 'emb', 'op': 'linear', 'in': 'x', 'out': 4}], 'outputs': ['emb'], 'train': {'freeze': ['emb.*', 'enb.*']}}", "train.freeze[1]: error: 'enb.*' matches no parameter of the model (kiln check lists them)", 1),
    H("train_group_typo", "{" HEAD IN_X "'layers': [{'name': 'emb', 'op': 'linear', 'in': 'x', 'out': 4}], 'outputs': ['emb'], 'train': {'groups': [{'match': '*.bais', 'weight_decay': 0}]}}", "train.groups[0].match: error: '*.bais' matches no parameter of the model", 1),
    H("train_not_object", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'train': [1]}", "train: error: expected an object, got a list", 1),
    H("tokenizer_bpe_no_vocab", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'tokenizer': {'kind': 'bpe'}}", "tokenizer.vocab: error: required key is missing", 1),
    H("tokenizer_kind", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'tokenizer': {'kind': 'word'}}", "tokenizer.kind: error: expected one of \"byte\", \"char\", \"bpe\", got \"word\"", 1),
    H("tokenizer_vocab_on_byte", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'tokenizer': {'kind': 'byte', 'vocab': 300}}", "tokenizer.vocab: error: applies only to kind \"bpe\"", 1),
    H2("init_std_negative", "{" HEAD IN_X "'layers': [], 'outputs': ['x'], 'init': {'std': -0.1, 'sead': 1}}", "init.std: error: -0.1 is negative", 2, "init.sead: error: unknown key in init (expected seed, std) (did you mean \"seed\"?)"),
    /* layers and losses downstream of a failed layer still get their attributes checked */
    H2("downstream_attributes",
     "{" HEAD SEQ "'layers': ["
     " {'name': 'a', 'op': 'attention', 'in': 'x', 'heads': 3},"
     " {'name': 'b', 'op': 'feed_forward', 'hidden': 16, 'casual': true},"
     " {'name': 'c', 'op': 'scale', 'by': 'two'},"
     " {'name': 'y', 'op': 'sum', 'axes': [0, 'one']}],"
     " 'outputs': ['y'], 'losses': [{'op': 'mse', 'in': ['c', 'x'], 'wieght': 2}]}",
     "layers[1].casual: error: unknown key for op 'feed_forward'\n", 5,
     "losses[0].wieght: error: unknown key for loss 'mse'"),
    H("downstream_type_error", "{" HEAD SEQ "'layers': [{'name': 'a', 'op': 'neg', 'in': 'nope'}, {'name': 'y', 'op': 'scale', 'by': 'two'}]" OUT_Y, "layers[1].by: error: expected a finite number, got \"two\"", 2),
    /* many errors in one run, each once, nothing cascading from a failed layer */
    H2("many_errors",
     "{" HEAD SEQ "'layers': ["
     " {'name': 'a', 'op': 'attention', 'heads': 3, 'in': 'x'},"                 /* 8 % 3 */
     " {'name': 'b', 'op': 'layernorm'},"                                        /* takes a: silent */
     " {'name': 'c', 'op': 'tanh', 'in': 'x', 'bogus': 1},"                      /* unknown key */
     " {'name': 'd', 'op': 'slice', 'in': 'c', 'step': 0},"                      /* step 0 */
     " {'name': 'e', 'op': 'add', 'in': ['c', 'nope']}],"                        /* unknown name */
     " 'outputs': ['b', 'e'], 'losses': [{'op': 'mse', 'in': ['b', 'x']}], 'train': {'lr': 0}}",
     "layers[0].heads: error: 8 is not divisible by 3", 5, "train.lr: error: 0 must be > 0"),
};

static void run_hostile(void **state)
{
    const hostile *h = *state;
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = load(&m, h->text, NULL, &d);
    char *msg = diag_text(&d);
    if (ok) fail_msg("%s: expected a failure", h->name);
    if (!strstr(msg, h->expect)) fail_msg("%s: expected \"%s\" in:\n%s", h->name, h->expect, msg);
    if (h->expect2 && !strstr(msg, h->expect2)) fail_msg("%s: expected \"%s\" in:\n%s", h->name, h->expect2, msg);
    if (h->count && d.n != h->count) fail_msg("%s: expected %d diagnostics, got %d:\n%s", h->name, h->count, d.n, msg);
    /* every diagnostic names the file; a failed load leaves a freed model */
    for (int i = 0; i < d.n; i++) assert_non_null(d.items[i].file);
    assert_int_equal(m.graph.n_nodes, 0);
    free(msg);
    kiln_diags_free(&d);
}

/* ---- hostile cases that need code ---------------------------------------------------------------- */

static void expect_failure(const char *text, size_t len, const kiln_load_options *opt, const char *want, int count)
{
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_false(kiln_model_load_text(&m, text, len, "m.json", opt, &d));
    char *msg = diag_text(&d);
    if (!strstr(msg, want)) fail_msg("expected \"%s\" in:\n%s", want, msg);
    if (count && d.n != count) fail_msg("expected %d diagnostics, got %d:\n%s", count, d.n, msg);
    free(msg);
    kiln_diags_free(&d);
}

static void test_deep_nesting(void **state)
{
    /* 200 nested lists inside a layer attribute: refused before cJSON recurses */
    char text[1024];
    int k = snprintf(text, sizeof text, "{\"format\": \"kiln/1\", \"x\": ");
    for (int i = 0; i < 200; i++) text[k++] = '[';
    for (int i = 0; i < 200; i++) text[k++] = ']';
    text[k++] = '}';
    text[k] = 0;
    /* the 65th open bracket: the object is level 1, so the 64th '[' at column 27 + 63 */
    expect_failure(text, strlen(text), NULL, "m.json:1:90: error: JSON nesting is deeper than 64 levels", 1);
}

static void test_too_many_values(void **state)
{
    /* 5 million numbers: refused by the pre-scan, not by 300 MB of cJSON nodes */
    size_t n = 5u << 20, len = 2 * n + 16;
    char *text = malloc(len);
    size_t k = (size_t)sprintf(text, "{\"v\": [");
    for (size_t i = 0; i < n; i++) {
        text[k++] = '0';
        text[k++] = ',';
    }
    text[k - 1] = ']';
    text[k++] = '}';
    expect_failure(text, k, NULL, "error: the file holds more than 4194304 JSON values", 1);
    free(text);
}

static void test_embedded_nul(void **state)
{
    static const char text[] = "{\"format\": \"kiln/1\"}\0{}";
    expect_failure(text, sizeof text - 1, NULL, "m.json:1:21: error: JSON syntax error: control character 0x00", 1);
}

static void test_single_quotes_are_not_json(void **state)
{
    static const char text[] = "{'format': 'kiln/1'}";
    expect_failure(text, sizeof text - 1, NULL, "m.json:1:2: error: JSON syntax error near ''format': 'kiln/1'}' (JSON strings take double quotes)", 1);
}

static void test_long_strings_bounded(void **state)
{
    /* a 100 kB key and a 100 kB layer name: the messages quote only a part */
    size_t big = 100000;
    char *key = malloc(big + 1), *text = malloc(3 * big + 512);
    memset(key, 'k', big);
    key[big] = 0;
    sprintf(text, "{'format': 'kiln/1', 'name': 'm', 'inputs': {'x': {'shape': [2]}}, 'layers': [{'name': '%s-', "
                  "'op': 'neg', 'in': 'x'}, {'name': 'y', 'op': 'neg', 'in': '%s'}], 'outputs': ['x'], '%s': 1}",
            key, key, key);
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_false(load(&m, text, NULL, &d));
    char *msg = diag_text(&d);
    assert_int_equal(d.n, 3);
    assert_true(strlen(msg) < 1000);
    assert_non_null(strstr(msg, "m.json: kkkkkkkkkk"));
    assert_non_null(strstr(msg, "...: error: unknown key at the top level"));
    assert_non_null(strstr(msg, "layers[0].name: error: 'kkkk"));
    assert_non_null(strstr(msg, "layers[1].in: error: 'kkkk"));
    free(msg);
    kiln_diags_free(&d);
    free(key);
    free(text);
}

static void test_define_errors(void **state)
{
    kiln_dim_binding defs[] = {{"Q", 3}, {"B", -1}};
    kiln_load_options opt = {.defines = defs, .n_defines = 2};
    char *text = q(BOUND);
    expect_failure(text, strlen(text), &opt, "m.json: -D Q: error: the model declares no dim 'Q'", 3);
    expect_failure(text, strlen(text), &opt, "-D B: error: -1 is negative", 3);
    expect_failure(text, strlen(text), &opt, "dims.N: error: has no default", 3);
    free(text);
}

static void test_given_errors(void **state)
{
    char *text = q(BOUND);
    kiln_given_input rank[] = {{.name = "tokens", .rank = 3, .dims = {2, 3, 4}}};
    kiln_load_options opt = {.given = rank, .n_given = 1};
    expect_failure(text, strlen(text), &opt,
                   "m.json:1:103: inputs.tokens.shape: error: the given tensor 'tokens' has rank 3 but the model declares rank 2", 0);

    kiln_dim_binding defs[] = {{"N", 4}};
    kiln_given_input clash[] = {{.name = "tokens", .rank = 2, .dims = {2, 6}},
                                {.name = "aux", .rank = 3, .dims = {3, 4, 8}}};
    kiln_load_options opt2 = {.defines = defs, .n_defines = 1, .given = clash, .n_given = 2,
                              .given_file = "x.safetensors"};
    expect_failure(text, strlen(text), &opt2,
                   "x.safetensors: aux: error: dim 'B' is 3 in the given tensor 'aux' but 2 in the given tensor 'tokens'",
                   1);
    /* -D settles a dim: given tensors then do not bind it (their check is the driver's) */
    kiln_dim_binding defs2[] = {{"B", 5}, {"N", 4}};
    kiln_load_options opt3 = {.defines = defs2, .n_defines = 2, .given = clash, .n_given = 2};
    kiln_model m;
    load_ok(&m, BOUND, &opt3);
    assert_int_equal(dim(&m, "B"), 5);
    kiln_model_free(&m);
    free(text);
}

static void test_node_cap(void **state)
{
    /* 2 × 10000 encoder layers would be ~1M nodes: refused at the cap, quickly */
    clock_t t0 = clock();
    char *text = q("{" HEAD SEQ "'layers': ["
                   " {'name': 'a', 'op': 'encoder_layer', 'in': 'x', 'repeat': 10000, 'heads': 2, 'hidden': 16},"
                   " {'name': 'y', 'op': 'encoder_layer', 'repeat': 10000, 'heads': 2, 'hidden': 16}]" OUT_Y);
    expect_failure(text, strlen(text), NULL, "layers[0].repeat: error: the model expands to more than 200000 IR nodes", 1);
    free(text);
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 30);
}

static void test_file_errors(void **state)
{
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_false(kiln_model_load(&m, "/nonexistent/model.json", NULL, &d));
    assert_false(kiln_model_load(&m, "/tmp", NULL, &d));
    char fifo[] = "/tmp/kiln_fe_fifo_XXXXXX";
    assert_non_null(mkdtemp(fifo));
    char fifo_path[64];
    snprintf(fifo_path, sizeof fifo_path, "%s/f", fifo);
    assert_int_equal(mkfifo(fifo_path, 0600), 0);
    assert_false(kiln_model_load(&m, fifo_path, NULL, &d)); /* must not block */
    char big[] = "/tmp/kiln_fe_big_XXXXXX";
    int fd = mkstemp(big);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)65 << 20), 0); /* sparse: costs no disk */
    close(fd);
    assert_false(kiln_model_load(&m, big, NULL, &d));
    unlink(big);
    unlink(fifo_path);
    rmdir(fifo);

    char *msg = diag_text(&d);
    assert_int_equal(d.n, 4);
    assert_non_null(strstr(msg, "/nonexistent/model.json: error: cannot open the model file: No such file"));
    assert_non_null(strstr(msg, "/tmp: error: not a regular file"));
    assert_non_null(strstr(msg, "/f: error: not a regular file"));
    assert_non_null(strstr(msg, "error: the model file is 68157440 bytes; the limit is 64 MiB"));
    free(msg);
    kiln_diags_free(&d);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_gpt_params_and_types),
        cmocka_unit_test(test_primitives), cmocka_unit_test(test_param_std_default), cmocka_unit_test(test_slice_to_int64_max),
        cmocka_unit_test(test_repeat_one_names),
        cmocka_unit_test(test_losses_weighted),
        cmocka_unit_test(test_dim_binding),
        cmocka_unit_test(test_train_groups),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_too_many_values),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_single_quotes_are_not_json),
        cmocka_unit_test(test_long_strings_bounded),
        cmocka_unit_test(test_define_errors),
        cmocka_unit_test(test_given_errors),
        cmocka_unit_test(test_node_cap),
        cmocka_unit_test(test_file_errors),
    };
    size_t n_fixed = sizeof fixed / sizeof fixed[0], n_cases = sizeof cases / sizeof cases[0];
    struct CMUnitTest *tests = calloc(n_fixed + n_cases, sizeof *tests);
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < n_cases; i++)
        tests[n_fixed + i] = (struct CMUnitTest){cases[i].name, run_hostile, NULL, NULL, (void *)&cases[i]};
    int failed = _cmocka_run_group_tests("frontend", tests, n_fixed + n_cases, NULL, NULL);
    free(tests);
    return failed;
}
