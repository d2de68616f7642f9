/* test_svg.c — the chart arithmetic and escaping `kiln plot` uses (driver/svg.c): tick
 * values are nice numbers inside the range, log axes get powers of ten or 1-2-5 steps,
 * labels carry just enough decimals, and text is escaped for XML. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svg.h"

static void expect_ticks(double lo, double hi, bool log_scale, int max, const double *want, int n_want)
{
    double got[32], step;
    int n = svg_ticks(lo, hi, log_scale, max, got, &step);
    if (n != n_want) {
        fprintf(stderr, "[%g, %g]%s: %d ticks, want %d\n", lo, hi, log_scale ? " log" : "", n, n_want);
        for (int i = 0; i < n; i++) fprintf(stderr, "  %g\n", got[i]);
    }
    assert_int_equal(n, n_want);
    for (int i = 0; i < n; i++) assert_true(fabs(got[i] - want[i]) <= 1e-12 * fmax(1, fabs(want[i])));
}

static void test_linear_ticks_are_nice_and_inside(void **state)
{
    expect_ticks(0, 100, false, 8, (double[]){0, 20, 40, 60, 80, 100}, 6);
    expect_ticks(1.83, 5.72, false, 8, (double[]){2, 3, 4, 5}, 4);
    expect_ticks(2.46, 2.71, false, 8, (double[]){2.5, 2.55, 2.6, 2.65, 2.7}, 5);
    expect_ticks(-0.3, 0.3, false, 8, (double[]){-0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3}, 7); /* 0, not -0 */
    double t[32], step;
    assert_int_equal(svg_ticks(1, 1, false, 8, t, &step), 0); /* an empty range has none */
    /* many ranges: never more than asked, always inside, evenly spaced by 1, 2 or 5 × 10^k */
    srand(3);
    for (int k = 0; k < 2000; k++) {
        double scale = pow(10, rand() % 9 - 4);
        double lo = (rand() / (double)RAND_MAX - 0.5) * 3 * scale;
        double hi = lo + (0.01 + rand() / (double)RAND_MAX) * scale;
        int n = svg_ticks(lo, hi, false, 8, t, &step);
        assert_true(n >= 2 && n <= 8);
        double m = step / pow(10, floor(log10(step)));
        assert_true(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
        for (int i = 0; i < n; i++) {
            assert_true(t[i] >= lo - 1e-9 * step && t[i] <= hi + 1e-9 * step);
            if (i) assert_true(fabs(t[i] - t[i - 1] - step) < 1e-9 * step);
        }
    }
}

static void test_log_ticks(void **state)
{
    expect_ticks(1e-5, 0.1, true, 8, (double[]){1e-5, 1e-4, 1e-3, 1e-2, 1e-1}, 5);
    expect_ticks(1.5, 60, true, 8, (double[]){2, 5, 10, 20, 50}, 5);   /* 1-2-5 */
    expect_ticks(2.4, 5.7, true, 8, (double[]){3, 4, 5}, 3);           /* a loss curve */
    expect_ticks(1e-10, 1e10, true, 8, (double[]){1e-10, 1e-7, 1e-4, 1e-1, 1e2, 1e5, 1e8}, 7);
    expect_ticks(2.46, 2.71, true, 8, (double[]){2.5, 2.55, 2.6, 2.65, 2.7}, 5); /* narrow: plain values */
}

static void test_labels(void **state)
{
    char b[64];
    struct {
        double v, step;
        const char *want;
    } cases[] = {{0.25, 0.05, "0.25"}, {2.5, 0.5, "2.5"}, {3, 0.5, "3.0"}, {100, 20, "100"}, {0.75, 0.25, "0.75"},
                 {1e-5, 0, "1e-05"},   {-0.0, 0.1, "0"},  {2.55, 0.05, "2.55"}, {1500000, 500000, "1.5e+06"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        svg_tick_label(cases[i].v, cases[i].step, b, sizeof b);
        if (strcmp(b, cases[i].want) != 0) fprintf(stderr, "%g step %g: '%s', want '%s'\n", cases[i].v, cases[i].step, b, cases[i].want);
        assert_string_equal(b, cases[i].want);
    }
}

static void test_escape(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    svg_escape(f, "a<b&\"c'>\x01z");
    svg_text(f, 1, 2, "end", NULL, "<t>");
    fclose(f);
    assert_string_equal(text, "a&lt;b&amp;&quot;c&apos;&gt;z<text x=\"1.0\" y=\"2.0\" text-anchor=\"end\">&lt;t&gt;</text>\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_ticks_are_nice_and_inside),
        cmocka_unit_test(test_log_ticks),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
