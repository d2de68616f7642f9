/* schedule.h — the learning-rate schedule of `kiln train` (SPEC section 4).
 *
 * The compiled training step takes its learning rate as an argument, so the schedule is
 * the caller's: this is the driver's. It follows llm.c and nanoGPT:
 *
 *   step s = 0, 1, … (the number of steps already taken), W warmup steps, N total steps
 *   s < W          lr · (s + 1) / W                       (the first step is not wasted at 0)
 *   otherwise      progress q = (s − W) / (N − W), clamped to [0, 1]
 *     constant     lr
 *     cosine       min_lr + (lr − min_lr) · ½ · (1 + cos(π·q))
 *     linear       min_lr + (lr − min_lr) · (1 − q)
 *
 * N = 0 (unknown) or N ≤ W means no decay after warmup. */
#ifndef KILN_SCHEDULE_H
#define KILN_SCHEDULE_H

#include <stdint.h>

#include "frontend.h"

typedef struct kiln_lr_schedule {
    kiln_schedule kind;
    double lr, min_lr;
    int64_t warmup, total;
} kiln_lr_schedule;

double kiln_schedule_lr(const kiln_lr_schedule *s, int64_t step);

#endif
