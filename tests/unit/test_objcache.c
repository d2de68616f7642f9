/* test_objcache.c — the JIT's compile cache (codegen/objcache.c).
 *
 * A small graph with a GEMM and elementwise work (so both of a compile's objects, the
 * kernels' and the GEMMs', have code in them) is compiled with the cache in a fresh
 * directory:
 *   - the first compile misses and saves one entry, the second hits, and both run to
 *     the same bits;
 *   - another shape is another entry;
 *   - an entry with one byte changed, or cut short, is a miss (and is written anew), and
 *     the code compiled instead is right;
 *   - with the cache off nothing is read or written;
 *   - a directory writable by others, or not a directory, is refused with a diagnostic
 *     and leaves the cache off;
 *   - past its size limit the least recently used entries go (a sparse file stands in
 *     for a large old entry).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "test_graph.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kiln-objcache-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kiln_objcache_open(NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The paths of the entries in dir, sorted; returns how many (at most max). */
static int entries(char names[][400], int max)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".kobj") == 0) {
            assert_true(n < max);
            snprintf(names[n++], 400, "%s/%s", dir, de->d_name);
        }
    }
    closedir(d);
    qsort(names, (size_t)n, 400, (int (*)(const void *, const void *))strcmp);
    return n;
}

/* y = gelu_tanh(x · w) + x · w for x (M, 24), w (24, 40): deterministic data. */
static void build(test_graph *t, int64_t M)
{
    test_graph_init(t, "cached");
    int64_t dx[2] = {M, 24}, dw[2] = {24, 40};
    float *x = malloc((size_t)(M * 24) * 4), *w = malloc(24 * 40 * 4);
    for (int64_t i = 0; i < M * 24; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (int64_t i = 0; i < 24 * 40; i++) w[i] = (float)((i * 53) % 97) / 200.0f - 0.25f;
    uint32_t xi = test_graph_input(t, KILN_F32, 2, dx, x);
    uint32_t wi = test_graph_param(t, 2, dw, KILN_INIT_NORMAL, w);
    uint32_t mm = test_graph_op2(t, KILN_OP_MATMUL, xi, wi);
    test_graph_output(t, test_graph_op2(t, KILN_OP_ADD, test_graph_op1(t, KILN_OP_GELU_TANH, mm), mm));
}

/* Compiles t, runs it, returns its output (malloc'd, n floats) and whether it was a hit. */
static float *compile_run(test_graph *t, size_t n, bool *cached)
{
    kiln_compile_request req = test_graph_request(t);
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, &t->d)) test_graph_fail(t, "kiln_compile_graph");
    *cached = c.cached;
    void *outs[TEST_GRAPH_MAX];
    assert_int_equal(test_graph_call(t, &c, outs, NULL), 0);
    float *y = malloc(n * 4);
    memcpy(y, outs[0], n * 4);
    test_graph_outputs_free(t, outs);
    kiln_compiled_free(&c);
    return y;
}

/* Changes byte `at` of file path (from its end when at < 0), or cuts it to `cut` bytes. */
static void damage(const char *path, long at, long cut)
{
    if (cut >= 0) {
        assert_int_equal(truncate(path, cut), 0);
        return;
    }
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, at < 0 ? SEEK_END : SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, at, at < 0 ? SEEK_END : SEEK_SET), 0);
    fputc(c ^ 0x40, f);
    fclose(f);
}

static void test_hit_and_miss(void **state)
{
    (void)state;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_true(kiln_objcache_open(dir, &d));
    assert_string_equal(kiln_objcache_dir(), dir);
    test_graph t;
    build(&t, 30);
    size_t n = 30 * 40;
    bool hit;
    float *first = compile_run(&t, n, &hit);
    assert_false(hit);
    char names[4][400];
    assert_int_equal(entries(names, 4), 1);
    float *again = compile_run(&t, n, &hit);
    assert_true(hit);
    assert_memory_equal(first, again, n * 4);
    free(again);

    /* one byte of the objects, then the header's first size, then a cut: each a miss, and
     * the code compiled instead gives the same bits; the next compile hits again */
    long where[3][2] = {{-100, -1}, {24, -1}, {0, 200}};
    for (int i = 0; i < 3; i++) {
        damage(names[0], where[i][0], where[i][1]);
        float *y = compile_run(&t, n, &hit);
        assert_false(hit);
        assert_memory_equal(first, y, n * 4);
        free(y);
        y = compile_run(&t, n, &hit);
        assert_true(hit);
        free(y);
        assert_int_equal(entries(names, 4), 1);
    }

    /* another shape, another entry */
    test_graph u;
    build(&u, 7);
    free(compile_run(&u, 7 * 40, &hit));
    assert_false(hit);
    assert_int_equal(entries(names, 4), 2);
    test_graph_free(&u);

    /* off: no hit, nothing written */
    assert_true(kiln_objcache_open(NULL, &d));
    assert_null(kiln_objcache_dir());
    float *y = compile_run(&t, n, &hit);
    assert_false(hit);
    assert_memory_equal(first, y, n * 4);
    free(y);
    assert_int_equal(entries(names, 4), 2);
    assert_int_equal(d.n, 0);
    free(first);
    test_graph_free(&t);
    kiln_diags_free(&d);
}

static void test_refused_directories(void **state)
{
    (void)state;
    char open_dir[128], file[128];
    snprintf(open_dir, sizeof open_dir, "%s/shared", dir);
    snprintf(file, sizeof file, "%s/a-file", dir);
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 0777), 0);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    const char *bad[2] = {open_dir, file};
    const char *why[2] = {"others may write to it", "is not a directory"};
    for (int i = 0; i < 2; i++) {
        kiln_diags d;
        kiln_diags_init(&d);
        assert_false(kiln_objcache_open(bad[i], &d));
        assert_null(kiln_objcache_dir());
        assert_int_equal(d.n, 1);
        assert_non_null(strstr(d.items[0].message, why[i]));
        kiln_diags_free(&d);
    }
    /* a missing directory and its parents are made, private */
    char deep[160];
    snprintf(deep, sizeof deep, "%s/a/b/c", dir);
    assert_true(kiln_objcache_open(deep, NULL));
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    kiln_objcache_open(NULL, NULL);
}

static void test_prune(void **state)
{
    (void)state;
    char sub[128], old[200];
    snprintf(sub, sizeof sub, "%s/prune", dir);
    assert_true(kiln_objcache_open(sub, NULL));
    /* an old entry of 600 MiB (sparse: no disk), over the 512 MiB limit */
    snprintf(old, sizeof old, "%s/0123456789abcdef0123456789abcdef.kobj", sub);
    int fd = open(old, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 600l << 20), 0);
    struct timeval long_ago[2] = {{1000000000, 0}, {1000000000, 0}};
    assert_int_equal(futimes(fd, long_ago), 0);
    close(fd);
    test_graph t;
    build(&t, 5);
    bool hit;
    free(compile_run(&t, 5 * 40, &hit));
    assert_false(hit);
    assert_int_equal(access(old, F_OK), -1); /* pruned */
    free(compile_run(&t, 5 * 40, &hit));
    assert_true(hit); /* the new entry stayed */
    test_graph_free(&t);
    kiln_objcache_open(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_refused_directories),
        cmocka_unit_test(test_prune),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
