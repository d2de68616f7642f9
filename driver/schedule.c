/* schedule.c — see schedule.h for the formulas. Computed in double, rounded to f32 by
 * the caller when it passes lr to the training step. */
#include "schedule.h"

#include <math.h>

double kiln_schedule_lr(const kiln_lr_schedule *s, int64_t step)
{
    if (step < 0) step = 0;
    if (step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    if (s->kind == KILN_SCHED_CONSTANT || s->total <= s->warmup) return s->lr;
    double q = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    if (q > 1) q = 1;
    double span = s->lr - s->min_lr;
    if (s->kind == KILN_SCHED_COSINE) return s->min_lr + span * 0.5 * (1.0 + cos(M_PI * q));
    return s->min_lr + span * (1.0 - q);
}
