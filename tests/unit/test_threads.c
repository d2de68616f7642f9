/* test_threads.c — the runtime's thread pool (runtime/threads.c).
 *
 * Design: fn records, for every index it is given, how often it saw it and which chunk
 * (the chunk's begin) covered it; after each call every index must have been seen
 * exactly once, the chunks must be the documented fixed partition [n·i/t, n·(i+1)/t),
 * and no chunk may be empty. This runs for 1..4 threads, for item counts below, at and
 * above the thread count, 0 items, and many repeated calls (hand-offs racing the spin).
 * Nested calls run inline. kiln_parallel_for2: both phases covered exactly once, and no
 * phase-2 item starts before every phase-1 item has finished (the GEMM's packing, then
 * the parts that read it), under repeated calls racing the workers' spin. The statistics
 * count each job and chunk once, only while on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "kiln/runtime.h"

enum { MAX_ITEMS = 1000 };

typedef struct record {
    atomic_int seen[MAX_ITEMS];
    int64_t chunk_of[MAX_ITEMS];
    atomic_int calls, empty;
} record;

static void mark(void *ctx, int64_t begin, int64_t end) {
    record *r = ctx;
    atomic_fetch_add(&r->calls, 1);
    if (begin >= end) atomic_fetch_add(&r->empty, 1);
    for (int64_t i = begin; i < end; i++) {
        atomic_fetch_add(&r->seen[i], 1);
        r->chunk_of[i] = begin;
    }
}

static record g_rec;

static void check_call(int threads, int64_t n) {
    memset(&g_rec, 0, sizeof g_rec);
    kiln_parallel_for(mark, &g_rec, n);
    for (int64_t i = 0; i < n; i++) assert_int_equal(atomic_load(&g_rec.seen[i]), 1);
    assert_int_equal(atomic_load(&g_rec.empty), 0);
    if (n == 0) {
        assert_int_equal(atomic_load(&g_rec.calls), 0);
        return;
    }
    /* up to 4 chunks a thread, fixed by (n, threads): chunk c = [n·c/parts, n·(c+1)/parts) */
    int parts = (int)(n < 4 * threads ? n : 4 * threads), chunks = 0;
    for (int c = 0; c < parts && threads > 1; c++) {
        int64_t begin = n * c / parts, end = n * (c + 1) / parts;
        if (begin == end) continue;
        chunks++;
        for (int64_t i = begin; i < end; i++) assert_int_equal(g_rec.chunk_of[i], begin);
    }
    assert_int_equal(atomic_load(&g_rec.calls), threads == 1 || n == 1 ? 1 : chunks);
}

static void test_coverage(void **state) {
    static const int64_t counts[] = {0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 999, MAX_ITEMS};
    for (int t = 1; t <= 4; t++) {
        assert_int_equal(kiln_threads_set(t), 0);
        assert_int_equal(kiln_threads_get(), t);
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) check_call(t, counts[c]);
    }
    assert_int_equal(kiln_threads_set(1), 0);
}

static void test_repeated(void **state) {
    for (int t = 1; t <= 4; t++) {
        assert_int_equal(kiln_threads_set(t), 0);
        for (int rep = 0; rep < 2000; rep++) check_call(t, 1 + rep % 17);
    }
    assert_int_equal(kiln_threads_set(1), 0);
}

static void test_bad_and_capped_counts(void **state) {
    assert_int_not_equal(kiln_threads_set(0), 0);
    assert_int_not_equal(kiln_threads_set(-3), 0);
    assert_int_equal(kiln_threads_get(), 1);
    assert_int_equal(kiln_threads_set(1000), 0);
    assert_int_equal(kiln_threads_get(), KILN_MAX_THREADS);
    check_call(KILN_MAX_THREADS, 100);
    assert_int_equal(kiln_threads_set(1), 0);
}

/* A call from inside fn runs inline on that thread, covering its whole range. */
static atomic_int g_inner_items;
static void count_inner(void *ctx, int64_t begin, int64_t end) { atomic_fetch_add(&g_inner_items, (int)(end - begin)); }
static void nested(void *ctx, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) kiln_parallel_for(count_inner, NULL, 10);
}

static void test_nested_inline(void **state) {
    assert_int_equal(kiln_threads_set(3), 0);
    atomic_store(&g_inner_items, 0);
    kiln_parallel_for(nested, NULL, 6);
    assert_int_equal(atomic_load(&g_inner_items), 60);
    assert_int_equal(kiln_threads_set(1), 0);
}

/* Phase 1 counts its finished items (after a little work, so a thread that waited for
 * them too briefly would see fewer); phase 2 records the count it saw. */
typedef struct two_phase {
    atomic_int seen1[MAX_ITEMS], seen2[MAX_ITEMS];
    atomic_int done1, early;  /* phase-1 items finished; phase-2 chunks that saw fewer than n1 */
    int64_t n1;
} two_phase;
static two_phase g_two;

static void phase1(void *ctx, int64_t begin, int64_t end) {
    two_phase *r = ctx;
    for (int64_t i = begin; i < end; i++) {
        volatile float x = 1;
        for (int k = 0; k < 200; k++) x = x * 1.0001f;
        atomic_fetch_add(&r->seen1[i], 1);
        atomic_fetch_add(&r->done1, 1);
    }
}
static void phase2(void *ctx, int64_t begin, int64_t end) {
    two_phase *r = ctx;
    if (atomic_load(&r->done1) != r->n1) atomic_fetch_add(&r->early, 1);
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&r->seen2[i], 1);
}

static void test_two_phases(void **state) {
    static const int64_t n1s[] = {0, 1, 2, 5, 12, 48, 300}, n2s[] = {0, 1, 2, 3, 8, 20};
    for (int t = 1; t <= 4; t++) {
        assert_int_equal(kiln_threads_set(t), 0);
        for (int rep = 0; rep < 200; rep++)
            for (size_t a = 0; a < sizeof n1s / sizeof n1s[0]; a++)
                for (size_t b = 0; b < sizeof n2s / sizeof n2s[0]; b++) {
                    if (rep > 0 && (a + b + (size_t)rep) % 7) continue;  /* a sample of the repeats */
                    memset(&g_two, 0, sizeof g_two);
                    g_two.n1 = n1s[a];
                    kiln_parallel_for2(phase1, n1s[a], phase2, n2s[b], &g_two);
                    for (int64_t i = 0; i < n1s[a]; i++) assert_int_equal(atomic_load(&g_two.seen1[i]), 1);
                    for (int64_t i = 0; i < n2s[b]; i++) assert_int_equal(atomic_load(&g_two.seen2[i]), 1);
                    assert_int_equal(atomic_load(&g_two.early), 0);
                }
    }
    assert_int_equal(kiln_threads_set(1), 0);
}

/* kiln_threads_stats: counts only while on; every published job and every chunk counted
 * once (by the caller or a worker); the workers' looks on the caller's CPU are at most
 * their looks; reading resets. */
static void test_stats(void **state) {
    (void)state;
    assert_int_equal(kiln_threads_set(2), 0);
    int64_t st[KILN_THREADS_STATS];
    kiln_threads_stats(NULL, 1);
    enum { CALLS = 50, ITEMS = 40 };  /* 8 chunks a call on 2 threads */
    for (int c = 0; c < CALLS; c++) check_call(2, ITEMS);
    kiln_threads_stats(st, 0);
    assert_int_equal(st[0], CALLS);
    assert_int_equal(st[1] + st[2], CALLS * 8);
    for (int i = 0; i < KILN_THREADS_STATS; i++) assert_true(st[i] >= 0);
    assert_true(st[7] <= CALLS);  /* one first look per worker and job at most */
    check_call(2, ITEMS);         /* off: not counted */
    kiln_threads_stats(st, 0);
    /* what the caller counts, and the chunks (each counted before its job ends); a worker's
     * late look at the last counted job may still land after the switch */
    for (int i = 0; i <= 6; i++)
        if (i != 3 && i != 5) assert_int_equal(st[i], 0);
    assert_int_equal(kiln_threads_set(1), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coverage),
        cmocka_unit_test(test_repeated),
        cmocka_unit_test(test_bad_and_capped_counts),
        cmocka_unit_test(test_nested_inline),
        cmocka_unit_test(test_two_phases),
        cmocka_unit_test(test_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
