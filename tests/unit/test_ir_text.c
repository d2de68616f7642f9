/* test_ir_text.c — the IR's text form: the exact printed format, print → parse round
 * trips (every op, odd floats, strings), lenient and hostile input (lexical,
 * structural and semantic errors, overlong lines, mutations of a good file) and the
 * golden files under tests/golden. Fixture: ir_fixture.h. */
#include "ir_fixture.h"

/* ---- text form ------------------------------------------------------------------------- */

static void test_print_format(void **state)
{
    fx *f = *state;
    uint32_t tok = input(f, "tokens", KILN_I32, SHAPE(2, 6));
    uint32_t wte = param(f, "wte.weight", KILN_INIT_NORMAL, 0.02, SHAPE(17, 16));
    kiln_attrs ga = axis_attrs(0);
    uint32_t e = kiln_graph_add(&f->g, KILN_OP_GATHER, (uint32_t[]){wte, tok}, 2, &ga, "wte", "layers[0]", &f->d);
    kiln_attrs ra = {0};
    ra.n_axes = 1;
    ra.axes[0] = 2;
    ra.keepdims = true;
    uint32_t s = kiln_graph_add(&f->g, KILN_OP_SUM, &e, 1, &ra, NULL, NULL, &f->d);
    kiln_attrs sl = axis_attrs(1);
    sl.start = 0;
    sl.end = 6;
    sl.step = 2;
    kiln_graph_add(&f->g, KILN_OP_SLICE, &s, 1, &sl, "every other", "layers[1].x y", &f->d);
    float v[2] = {0.1f, -2};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(2));
    ca.values = v;
    ca.n_values = 2;
    kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    kiln_graph_add_output(&f->g, "emb", e);
    assert_int_equal(f->d.n, 0);

    char *text = kiln_graph_print(&f->g);
    assert_string_equal(text, "graph t\n"
                              "%0 = input \"tokens\" : i32[2,6] @inputs \"tokens\"\n"
                              "%1 = param \"wte.weight\" init=normal std=0.02 : f32[17,16] @params \"wte.weight\"\n"
                              "%2 = gather(%1, %0) axis=0 : f32[2,6,16] @layers[0] \"wte\"\n"
                              "%3 = sum(%2) axes=[2] keepdims : f32[2,6,1]\n"
                              "%4 = slice(%3) axis=1 start=0 end=6 step=2 : f32[2,3,1] @\"layers[1].x y\" \"every other\"\n"
                              "%5 = constant [0.1,-2] : f32[2]\n"
                              "output \"emb\" = %2\n");
    free(text);
}

/* print → parse → print is byte-identical, and the parsed graph verifies. */
static void check_round_trip(const kiln_graph *g)
{
    char *text = kiln_graph_print(g);
    kiln_graph h;
    kiln_diags d;
    kiln_graph_init(&h, NULL);
    kiln_diags_init(&d);
    bool ok = kiln_graph_parse(&h, text, "roundtrip.kir", &d);
    if (!ok) {
        kiln_diags_print(&d, stderr);
        fprintf(stderr, "%s", text);
        fail_msg("the printed graph does not parse");
    }
    char *again = kiln_graph_print(&h);
    assert_string_equal(text, again);
    assert_true(kiln_graph_verify(&h, &d));
    assert_int_equal(h.n_nodes, g->n_nodes);
    assert_int_equal(h.loss, g->loss);
    free(text);
    free(again);
    kiln_graph_free(&h);
    kiln_diags_free(&d);
}

static void test_round_trip_all_ops(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    check_round_trip(&f->g);
}

static void test_round_trip_floats(void **state)
{
    fx *f = *state;
    float v[] = {0.1f, -0.0f, 1e-45f, 3.4028235e38f, 16777217.0f, 1.0f / 3.0f, INFINITY, -INFINITY, 100.0f, 1e6f};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(10));
    ca.values = v;
    ca.n_values = 10;
    uint32_t c = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    int32_t iv[] = {INT32_MIN, INT32_MAX, 0};
    kiln_attrs ia = type_attrs(KILN_I32, SHAPE(3));
    ia.values = iv;
    ia.n_values = 3;
    kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ia, NULL, NULL, &f->d);
    static const double scales[] = {0.1, 1.0 / 3.0, 1e-300, 5e-324, -2.5, 1e300, 0.0};
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++) {
        kiln_attrs s = scalar_attrs(scales[i]);
        op1(f, KILN_OP_SCALE, c, &s);
    }
    param(f, "p", KILN_INIT_UNIFORM, 1.0 / 7.0, SHAPE(2));
    assert_int_equal(f->d.n, 0);
    check_round_trip(&f->g);

    /* and the values themselves come back bit for bit */
    char *text = kiln_graph_print(&f->g);
    kiln_graph h;
    kiln_graph_init(&h, NULL);
    assert_true(kiln_graph_parse(&h, text, NULL, &f->d));
    assert_memory_equal(h.nodes[0].attrs.values, v, sizeof v);
    assert_memory_equal(h.nodes[1].attrs.values, iv, sizeof iv);
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++)
        assert_memory_equal(&h.nodes[2 + i].attrs.scalar, &scales[i], sizeof(double));
    assert_non_null(strstr(text, "by=0.1 "));        /* shortest form, not 0.10000000000000001 */
    assert_non_null(strstr(text, "[0.1,-0,1.4013e-45,3.4028235e+38,16777216,0.33333334,inf,-inf,100,1e+06]"));
    free(text);
    kiln_graph_free(&h);
}

static void test_round_trip_strings(void **state)
{
    fx *f = *state;
    kiln_graph_free(&f->g);
    kiln_graph_init(&f->g, "my graph \"v2\"");
    kiln_attrs a = type_attrs(KILN_F32, SHAPE(2));
    a.name = "we\\ird \"name\"\n\ttab \x01 é";
    uint32_t x = kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, "", "", &f->d);
    kiln_graph_add(&f->g, KILN_OP_EXP, &x, 1, NULL, "label # not a comment", "layers[\"k\"]", &f->d);
    kiln_graph_add(&f->g, KILN_OP_NEG, &x, 1, NULL, NULL, "only.origin", &f->d);
    kiln_graph_add_output(&f->g, "out \"1\"", 1);
    assert_int_equal(f->d.n, 0);
    check_round_trip(&f->g);
    char *text = kiln_graph_print(&f->g);
    kiln_graph h;
    kiln_graph_init(&h, NULL);
    assert_true(kiln_graph_parse(&h, text, NULL, &f->d));
    assert_string_equal(h.name, f->g.name);
    assert_string_equal(h.nodes[0].attrs.name, a.name);
    assert_string_equal(h.nodes[0].label, "");
    assert_string_equal(h.nodes[1].origin, "layers[\"k\"]");
    assert_null(h.nodes[2].label);
    assert_string_equal(h.outputs[0].name, "out \"1\"");
    free(text);
    kiln_graph_free(&h);
}

/* Hand-written text may use comments, blank lines, spare blanks, key=true/false and
 * attributes in any order; printing gives the canonical form. */
static void test_parse_lenient_input(void **state)
{
    fx *f = *state;
    const char *good = "# a comment\n"
                       "\n"
                       "graph   lenient   # trailing comment\n"
                       "%0=input\"a\":f32[2,3]\n"
                       "  %1 = param \"w\" std=0.5 init=normal : f32[3,3]\r\n"
                       "%2 = matmul( %0 ,%1 ) transpose_b=true transpose_a=false : f32[2,3]\n"
                       "%3 = sum(%2) keepdims=false axes=[ 1 , 0 ] : f32[]\n"
                       "loss = %3";
    assert_true(kiln_graph_parse(&f->g, good, "l.kir", &f->d));
    char *out = kiln_graph_print(&f->g);
    assert_string_equal(out, "graph lenient\n"
                             "%0 = input \"a\" : f32[2,3]\n"
                             "%1 = param \"w\" init=normal std=0.5 : f32[3,3]\n"
                             "%2 = matmul(%0, %1) transpose_b : f32[2,3]\n"
                             "%3 = sum(%2) axes=[0,1] : f32[]\n"
                             "loss = %3\n");
    free(out);
}

/* One hostile text: it must be refused with a first diagnostic at line:col whose
 * message contains `what`. */
typedef struct hostile {
    const char *text;
    int line, col;
    const char *what;
} hostile;

static void check_hostile(const hostile *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        bool ok = kiln_graph_parse(&g, h[i].text, "bad.kir", &d);
        if (ok) fail_msg("case %zu parsed: %s", i, h[i].text);
        assert_true(d.n >= 1);
        const kiln_diag *e = &d.items[0];
        if (e->line != h[i].line || e->col != h[i].col || !strstr(e->message, h[i].what) ||
            !e->file || strcmp(e->file, "bad.kir") != 0)
            fail_msg("case %zu: got %d:%d '%s', want %d:%d '%s'", i, e->line, e->col, e->message, h[i].line,
                     h[i].col, h[i].what);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }
}

#define HDR "graph g\n%0 = input \"x\" : f32[2,3]\n"

static void test_hostile_lexical(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {"", 1, 1, "expected 'graph NAME'"},
        {"graf g\n", 1, 1, "expected 'graph NAME'"},
        {"graph\n", 1, 6, "expected the graph's name"},
        {"graph g extra!\n", 1, 9, "unexpected text"},
        {HDR "%1 = exp(%0) : f32[2,3] \"unterminated\n", 3, 38, "unterminated string"},
        {HDR "%1 = exp(%0) : f32[2,3] \"bad \\q escape\"\n", 3, 30, "unknown escape"},
        {HDR "%1 = exp(%0) : f32[2,3] \"nul \\x00\"\n", 3, 30, "\\x00"},
        {HDR "%1 = exp(%0) : f32[2,3] \"tab\there\"\n", 3, 29, "control character"},
        {HDR "%1 = exp(%0) : f32[2,3] \"end\\", 3, 29, "unknown escape"},
        {HDR "%1 = softmax(%0) axis=1x : f32[2,3]\n", 3, 23, "bad integer"},
        {HDR "%1 = softmax(%0) axis=99999999999999999999 : f32[2,3]\n", 3, 23, "out of range"},
        {HDR "%1 = scale(%0) by=1e999 : f32[2,3]\n", 3, 19, "out of range"},
        {HDR "%1 = scale(%0) by=0.5.5 : f32[2,3]\n", 3, 19, "bad number"},
        {HDR "%1 = scale(%0) by= : f32[2,3]\n", 3, 20, "expected a number"},
        {HDR "%1 = exp(%0) : f32[2,3] @\n", 3, 26, "expected an origin"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_structure(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {HDR "%1 = frobnicate(%0) : f32[2,3]\n", 3, 6, "unknown op 'frobnicate'"},
        {HDR "%1 = add(%0, %2) : f32[2,3]\n", 3, 14, "%2 is not defined"},
        {HDR "%1 = add(%0, %1) : f32[2,3]\n", 3, 14, "%1 is not defined"},
        {HDR "%2 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%0 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%99999999999999999999999 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%1 exp(%0) : f32[2,3]\n", 3, 4, "expected '='"},
        {HDR "%1 = exp(%0)\n", 3, 13, "expected ':'"},
        {HDR "%1 = exp(%0) :\n", 3, 15, "expected a dtype"},
        {HDR "%1 = exp(%0) : f64[2,3]\n", 3, 16, "expected a dtype"},
        {HDR "%1 = exp(%0) : f32[2,3\n", 3, 23, "expected ','"},
        {HDR "%1 = exp(%0 : f32[2,3]\n", 3, 13, "expected ','"},
        {HDR "%1 = exp(%0,) : f32[2,3]\n", 3, 13, "expected a node reference"},
        {HDR "%1 = exp(%0) : f32[2,3] \"l\" junk\n", 3, 29, "unexpected text"},
        {HDR "%1 = exp(%0) : f32[1,1,1,1,1,1,1,1,1]\n", 3, 36, "more than 8 entries"},
        {HDR "%1 = exp(%0) : f32[2,-3]\n", 3, 19, "negative"},
        {HDR "= exp(%0) : f32[2,3]\n", 3, 1, "expected a node"},
        {HDR "%", 3, 1, "expected a node id"},
        {HDR "%1 = ", 3, 6, "expected an op name"},
        {HDR "output \"y\" = %5\n", 3, 14, "%5 is not defined"},
        {HDR "%1 = exp(%99999999999999999999) : f32[2,3]\n", 3, 10, "node %99999999999999999999 is not defined"},
        {HDR "output y = %0\n", 3, 8, "expected '\"'"},
        {HDR "loss %0\n", 3, 6, "expected '='"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_semantics(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {HDR "%1 = add(%0) : f32[2,3]\n", 3, 6, "expects 2 inputs, got 1"},
        {HDR "%1 = exp(%0) : f32[3,2]\n", 3, 16, "the type f32[3,2] differs from f32[2,3]"},
        {HDR "%1 = exp(%0) axis=0 : f32[2,3]\n", 3, 14, "exp has no attribute 'axis'"},
        {HDR "%1 = softmax(%0) axis=0 axis=1 : f32[2,3]\n", 3, 25, "given twice"},
        {HDR "%1 = softmax(%0) : f32[2,3]\n", 3, 6, "needs the attribute 'axis'"},
        {HDR "%1 = softmax(%0) axis=2 : f32[2,3]\n", 3, 6, "axis 2 is out of range"},
        {HDR "%1 = transpose(%0) perm=[1] : f32[3,2]\n", 3, 6, "perm has 1 entries but the input has rank 2"},
        {HDR "%1 = param \"w\" init=gaussian : f32[2]\n", 3, 21, "expected normal"},
        {HDR "%1 = param \"w\" init=zeros std=1 : f32[2]\n", 3, 6, "does not go with this init"},
        {HDR "%1 = param \"w\" init=normal : f32[2]\n", 3, 6, "needs the attribute 'std'"},
        {HDR "%1 = input \"x\" : f32[2]\n", 3, 12, "already used by %0"},
        {HDR "%1 = constant [1,2] : f32[3]\n", 3, 6, "2 values given"},
        {HDR "%1 = constant [1.5] : i32[3]\n", 3, 16, "bad i32 value"},
        {HDR "%1 = constant [3000000000] : i32[3]\n", 3, 16, "out of the i32 range"},
        {HDR "%1 = constant [1e39] : f32[1]\n", 3, 16, "out of the f32 range"},
        {HDR "%1 = constant [1,,2] : f32[3]\n", 3, 18, "expected a number"},
        {HDR "%1 = matmul(%0, %0) transpose_b=maybe : f32[2,2]\n", 3, 33, "expected true or false"},
        {HDR "%1 = input \"big\" : f32[1048576,1048576]\n", 3, 6, "too large"},
        {HDR "loss = %0\n", 3, 8, "must be a scalar f32"},
        {HDR "%1 = sum(%0) axes=[0,1] : f32[]\nloss = %1\nloss = %1\n", 5, 1, "given twice"},
        {HDR "output \"a\" = %0\noutput \"a\" = %0\n", 4, 8, "given twice"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_too_many_inputs(void **state)
{
    (void)state;
    /* concat takes any number of inputs, but the builder takes at most 64 */
    char text[4096] = HDR "%1 = concat(";
    for (int i = 0; i < 65; i++) strcat(text, i ? ", %0" : "%0");
    strcat(text, ") axis=0 : f32[130,3]\n");
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, "bad.kir", &d));
    assert_int_equal(d.items[0].line, 3);
    assert_int_equal(d.items[0].col, 13 + 64 * 4);
    assert_non_null(strstr(d.items[0].message, "more than 64 inputs"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

static void test_hostile_overlong_lines(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *text = malloc(n + 64);
    kiln_graph g;
    kiln_diags d;

    /* a megabyte of junk on one line */
    strcpy(text, "graph g\n");
    memset(text + 8, 'z', n);
    strcpy(text + 8 + n, " = 1\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_int_equal(d.items[0].line, 2);
    assert_int_equal(d.items[0].col, 1);
    kiln_graph_free(&g);
    kiln_diags_free(&d);

    /* a megabyte-long label is fine, and the error after it has the right column */
    strcpy(text, "graph g\n%0 = input \"x\" : f32[2] \"");
    size_t at = strlen(text);
    memset(text + at, 'a', n);
    strcpy(text + at + n, "\" ?\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_int_equal(d.items[0].col, (int)(at - 8 + n + 3));
    assert_non_null(strstr(d.items[0].message, "unexpected text"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);

    /* a 100-digit number */
    strcpy(text, HDR "%1 = softmax(%0) axis=");
    memset(text + strlen(text), '7', 100);
    strcpy(text + strlen(HDR "%1 = softmax(%0) axis=") + 100, " : f32[2,3]\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_non_null(strstr(d.items[0].message, "too long"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    free(text);
}

/* Mutations of a valid text (flipped, deleted and duplicated bytes, truncation) must
 * never crash; whatever still parses must verify and print stably. Run it under the
 * sanitizers. */
static void test_hostile_mutations(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    char *good = kiln_graph_print(&f->g);
    size_t len = strlen(good);
    static const char alphabet[] = "%=()[],:@\"\\#\n -0123456789e.xfi";
    uint64_t rng = 0x9e3779b97f4a7c15u;
    char *text = malloc(len * 2 + 2);
    int parsed = 0;
    for (int round = 0; round < 1500; round++) {
        memcpy(text, good, len + 1);
        size_t n = len;
        int edits = 1 + round % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            size_t pos = (size_t)(rng >> 33) % n;
            int kind = (int)((rng >> 20) % 4);
            if (kind == 0) text[pos] = alphabet[(rng >> 40) % (sizeof alphabet - 1)];
            else if (kind == 1 && n > 1) {
                memmove(text + pos, text + pos + 1, n - pos);
                n--;
            } else if (kind == 2 && n < len * 2) {
                memmove(text + pos + 1, text + pos, n - pos + 1);
                n++;
            } else {
                text[pos] = 0;
                n = pos ? pos : 1;
            }
        }
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        if (kiln_graph_parse(&g, text, NULL, &d)) {
            parsed++;
            assert_true(kiln_graph_verify(&g, &d));
            check_round_trip(&g);
        } else {
            assert_true(d.n >= 1);
            assert_true(d.items[0].line >= 1 && d.items[0].col >= 1);
        }
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }
    assert_true(parsed > 0);
    free(text);
    free(good);
}

static void test_parse_empty_graph(void **state)
{
    fx *f = *state;
    assert_true(kiln_graph_parse(&f->g, "graph empty\n", NULL, &f->d));
    assert_int_equal(f->g.n_nodes, 0);
    assert_string_equal(f->g.name, "empty");
    assert_int_equal(f->g.loss, KILN_NONE);
    char *text = kiln_graph_print(&f->g);
    assert_string_equal(text, "graph empty\n");
    free(text);
    assert_false(kiln_graph_parse(&f->g, NULL, NULL, &f->d));
}

static void test_golden_files(void **state)
{
    (void)state;
    const char *dir_path = KILN_SOURCE_DIR "/tests/golden/ir";
    DIR *dir = opendir(dir_path);
    assert_non_null(dir);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".kir") != 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
        char *text = golden_read_file(path);
        assert_non_null(text);
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        if (!kiln_graph_parse(&g, text, de->d_name, &d)) {
            kiln_diags_print(&d, stderr);
            fail_msg("%s does not parse", de->d_name);
        }
        assert_true(kiln_graph_verify(&g, &d));
        char *printed = kiln_graph_print(&g);
        if (strcmp(printed, text) != 0) {
            fprintf(stderr, "--- %s\n%s--- printed\n%s", de->d_name, text, printed);
            fail_msg("%s: print(parse(file)) differs from the file", de->d_name);
        }
        free(printed);
        free(text);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
        files++;
    }
    closedir(dir);
    assert_true(files >= 3);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_print_format),
        T(test_round_trip_all_ops),
        T(test_round_trip_floats),
        T(test_round_trip_strings),
        T(test_parse_lenient_input),
        T(test_hostile_lexical),
        T(test_hostile_structure),
        T(test_hostile_semantics),
        T(test_hostile_too_many_inputs),
        T(test_hostile_overlong_lines),
        T(test_hostile_mutations),
        T(test_parse_empty_graph),
        T(test_golden_files),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
