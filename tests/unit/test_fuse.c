/* test_fuse.c — golden tests of the kernel schedule (passes/fuse.c): input IR → kernel
 * grouping.
 *
 * Design: each tests/golden/fuse/NAME.kir is parsed, its live nodes (outputs, loss and
 * updates) are scheduled by kiln_fuse with every kind of fusion on, and the schedule is
 * printed one kernel a line as `kiln check --dump-after fuse` prints it ("kernel 3 gemm:
 * %4* %7*": kind and members in node order, parts separated by "|", `*` for a value
 * that leaves its kernel). That text must equal NAME.expected.txt; KILN_UPDATE_GOLDEN=1
 * rewrites the expected files instead (review the diff before committing). The graphs
 * are small and written with primitive ops, so each file shows one rule of the pass and
 * what does not qualify for it. test_order_checked shows that a schedule out of order
 * cannot go unnoticed (kiln_memplan_check).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "test_golden.h"


/* The schedule of g, one kernel a line (passes/pipeline.c's format). */
static char *schedule_text(const kiln_graph *g, const kiln_kernel_schedule *s)
{
    size_t cap = 64 + (size_t)s->n_kernels * 32 + (size_t)s->n_members * 16, len = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    len += (size_t)snprintf(t + len, cap - len, "# %u kernels\n", s->n_kernels);
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        len += (size_t)snprintf(t + len, cap - len, "kernel %u %s:", k, kiln_kernel_kind_name(kn->kind));
        for (uint32_t i = 0; i < kn->n; i++) {
            uint32_t id = s->members[kn->first + i];
            if (i > 0 && kn->parts > 1 && i % (kn->n / kn->parts) == 0) len += (size_t)snprintf(t + len, cap - len, " |");
            len += (size_t)snprintf(t + len, cap - len, " %%%u%s", id, s->internal[id] ? "" : "*");
        }
        len += (size_t)snprintf(t + len, cap - len, "\n");
        assert_true(len < cap);
    }
    (void)g;
    return t;
}

static int golden_one(const char *dir, const char *name)
{
    char path[4096], expected_path[4096];
    snprintf(path, sizeof path, "%s/%.255s", dir, name);
    snprintf(expected_path, sizeof expected_path, "%s/%.*s.expected.txt", dir, (int)(strlen(name) - 4), name);
    char *text = golden_read_file(path);
    assert_non_null(text);
    kiln_graph g;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(&g, NULL);
    if (!kiln_graph_parse(&g, text, path, &d)) {
        kiln_diags_print(&d, stderr);
        fail_msg("cannot parse %s", path);
    }
    unsigned char *live = calloc(g.n_nodes + 1, 1);
    kiln_graph_live(&g, KILN_LIVE_LOSS | KILN_LIVE_UPDATES, live);
    kiln_fuse_request req = {.live = live, .enable_loop = true, .enable_gemm = true, .dropout_alone = true};
    kiln_kernel_schedule s;
    assert_true(kiln_fuse(&g, &req, &s, &d));
    char *got = schedule_text(&g, &s);
    int mismatch = golden_check(expected_path, got);
    free(got);
    free(live);
    free(text);
    kiln_schedule_free(&s);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    return mismatch;
}

static void test_golden(void **state)
{
    (void)state;
    const char *dir = KILN_SOURCE_DIR "/tests/golden/fuse";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    int n = 0, bad = 0;
    char names[64][256];
    while ((e = readdir(dp)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".kir")) continue;
        assert_true(n < 64 && len < 256);
        strcpy(names[n++], e->d_name);
    }
    closedir(dp);
    for (int i = 0; i < n; i++) bad += golden_one(dir, names[i]);
    assert_true(n >= 2);
    if (bad) fail_msg("%d golden file(s) differ", bad);
}

/* The rule the golden files show, checked on its own terms: every bias gradient of
 * bias_grad.kir that a weight-gradient GEMM walks along k shares that GEMM's kernel, and
 * the ones no GEMM walks do not (a file rewritten by KILN_UPDATE_GOLDEN cannot hide a
 * regression of this). */
static void test_bias_grad_kernels(void **state)
{
    (void)state;
    char *text = golden_read_file(KILN_SOURCE_DIR "/tests/golden/fuse/bias_grad.kir");
    assert_non_null(text);
    kiln_graph g;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(&g, NULL);
    assert_true(kiln_graph_parse(&g, text, "bias_grad.kir", &d));
    unsigned char *live = calloc(g.n_nodes + 1, 1);
    kiln_graph_live(&g, 0, live);
    kiln_fuse_request req = {.live = live, .enable_loop = true, .enable_gemm = true};
    kiln_kernel_schedule s;
    assert_true(kiln_fuse(&g, &req, &s, &d));
    assert_int_equal(s.kernel_of[4], s.kernel_of[7]);   /* db with dW = dyᵀ·x */
    assert_int_equal(s.kernel_of[9], s.kernel_of[10]);  /* dc with dV = xᵀ·dz */
    assert_int_equal(s.kernels[s.kernel_of[7]].kind, KILN_KERNEL_GEMM);
    assert_int_not_equal(s.kernel_of[11], s.kernel_of[8]);
    assert_int_equal(s.kernels[s.kernel_of[11]].kind, KILN_KERNEL_NODE);
    assert_int_equal(s.kernels[s.kernel_of[12]].kind, KILN_KERNEL_NODE);
    kiln_schedule_free(&s);
    /* without GEMM fusion every sum is a kernel of its own */
    req.enable_gemm = false;
    assert_true(kiln_fuse(&g, &req, &s, &d));
    assert_int_equal(s.kernels[s.kernel_of[4]].kind, KILN_KERNEL_NODE);
    kiln_schedule_free(&s);
    free(live);
    free(text);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

/* A schedule out of order is caught: the memory plan records a value read before the
 * kernel computing it runs, and kiln_memplan_check (run on every compile) reports it.
 * The graph is a chain of kernels of their own; swapping the last two makes the last
 * one read the result of a kernel that now runs after it. */
static void test_order_checked(void **state)
{
    (void)state;
    const char *text = "graph order\n"
                       "%0 = input \"x\" : f32[4,8] @inputs \"x\"\n"
                       "%1 = input \"w\" : f32[8,6] @inputs \"w\"\n"
                       "%2 = matmul(%0, %1) : f32[4,6]\n"
                       "%3 = softmax(%2) axis=1 : f32[4,6]\n"
                       "%4 = matmul(%3, %3) transpose_b : f32[4,4] \"y\"\n"
                       "output \"y\" = %4\n";
    kiln_graph g;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(&g, NULL);
    if (!kiln_graph_parse(&g, text, "order", &d)) {
        kiln_diags_print(&d, stderr);
        fail_msg("cannot parse");
    }
    unsigned char *live = calloc(g.n_nodes + 1, 1);
    kiln_graph_live(&g, 0, live);
    kiln_fuse_request req = {.live = live, .enable_loop = true, .enable_gemm = true};
    kiln_kernel_schedule s;
    assert_true(kiln_fuse(&g, &req, &s, &d));
    assert_int_equal(s.n_kernels, 3);
    uint32_t inputs[2] = {0, 1};
    kiln_plan_request pr = {.needed = live, .inputs = inputs, .n_inputs = 2, .schedule = &s};
    kiln_memplan p;
    char msg[256];
    assert_true(kiln_plan_memory(&g, &pr, &p, &d));
    assert_true(kiln_memplan_check(&p, msg, sizeof msg));
    kiln_memplan_free(&p);

    kiln_kernel last = s.kernels[2];
    s.kernels[2] = s.kernels[1], s.kernels[1] = last;
    for (uint32_t k = 0; k < s.n_kernels; k++)
        for (uint32_t i = 0; i < s.kernels[k].n; i++) s.kernel_of[s.members[s.kernels[k].first + i]] = k;
    assert_true(kiln_plan_memory(&g, &pr, &p, &d));
    assert_false(kiln_memplan_check(&p, msg, sizeof msg));
    assert_non_null(strstr(msg, "node 3 is read by node 4's kernel"));
    kiln_memplan_free(&p);
    kiln_schedule_free(&s);
    free(live);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_bias_grad_kernels),
        cmocka_unit_test(test_order_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
