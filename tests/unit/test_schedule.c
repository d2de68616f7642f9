/* test_schedule.c — the learning-rate schedule of `kiln train` (driver/schedule.c)
 * against values computed by hand from the formulas in schedule.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "schedule.h"

#define NEAR(want, got) assert_true(fabs((want) - (got)) <= 1e-15 + 1e-12 * fabs(want))

static void test_warmup_is_linear_from_the_first_step(void **state)
{
    kiln_lr_schedule s = {KILN_SCHED_CONSTANT, 1e-3, 0, 4, 100};
    NEAR(0.25e-3, kiln_schedule_lr(&s, 0));  /* the first step already learns */
    NEAR(0.50e-3, kiln_schedule_lr(&s, 1));
    NEAR(1.00e-3, kiln_schedule_lr(&s, 3));
    NEAR(1.00e-3, kiln_schedule_lr(&s, 4));
    NEAR(1.00e-3, kiln_schedule_lr(&s, 99));
    NEAR(1.00e-3, kiln_schedule_lr(&s, 1000)); /* constant never decays */
}

static void test_cosine(void **state)
{
    kiln_lr_schedule s = {KILN_SCHED_COSINE, 1.0, 0.1, 10, 110};
    NEAR(0.1, kiln_schedule_lr(&s, 0));
    NEAR(1.0, kiln_schedule_lr(&s, 10));                                  /* q = 0 */
    NEAR(0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.25)), kiln_schedule_lr(&s, 35));
    NEAR(0.55, kiln_schedule_lr(&s, 60));                                 /* q = 1/2 */
    NEAR(0.1, kiln_schedule_lr(&s, 110));                                 /* q = 1: min_lr */
    NEAR(0.1, kiln_schedule_lr(&s, 500));                                 /* clamped */
    /* no warmup: the first step runs at the full rate */
    kiln_lr_schedule n = {KILN_SCHED_COSINE, 2.0, 0, 0, 4};
    NEAR(2.0, kiln_schedule_lr(&n, 0));
    NEAR(1.0, kiln_schedule_lr(&n, 2));
}

static void test_linear(void **state)
{
    kiln_lr_schedule s = {KILN_SCHED_LINEAR, 1.0, 0.2, 0, 10};
    NEAR(1.0, kiln_schedule_lr(&s, 0));
    NEAR(0.2 + 0.8 * 0.7, kiln_schedule_lr(&s, 3));
    NEAR(0.2, kiln_schedule_lr(&s, 10));
    kiln_lr_schedule z = {KILN_SCHED_LINEAR, 3e-4, 0, 2, 12};
    NEAR(1.5e-4, kiln_schedule_lr(&z, 0));
    NEAR(3e-4 * 0.5, kiln_schedule_lr(&z, 7));
}

static void test_unknown_total_means_no_decay(void **state)
{
    kiln_lr_schedule s = {KILN_SCHED_COSINE, 1.0, 0.0, 5, 0};
    NEAR(0.2, kiln_schedule_lr(&s, 0));
    NEAR(1.0, kiln_schedule_lr(&s, 50));
    kiln_lr_schedule w = {KILN_SCHED_LINEAR, 1.0, 0.0, 5, 3}; /* all warmup */
    NEAR(1.0, kiln_schedule_lr(&w, 7));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_warmup_is_linear_from_the_first_step),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_unknown_total_means_no_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
