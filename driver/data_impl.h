/* data_impl.h — private to data.c and batcher.c: the task table (data.c), which says
 * what each task's inputs are, for the loaders and for the batchers that fill them. */
#ifndef KILN_DATA_IMPL_H
#define KILN_DATA_IMPL_H

#include "data.h"

/* What fills a row nobody uses (kiln_batcher_next's filler) and how wide an input is. */
enum slot_kind { S_TOKENS, S_MASK, S_TARGET, S_LABEL };

struct task_info {
    int n;
    const char *names[KILN_TASK_MAX_INPUTS];
    int ranks[KILN_TASK_MAX_INPUTS];
    enum slot_kind kinds[KILN_TASK_MAX_INPUTS];
    int fields;                 /* TSV fields per line (0: a token stream) */
    const char *field_names;    /* for messages */
};
extern const struct task_info data_task_info[KILN_N_TASKS];

static inline bool is_stream_task(kiln_task t) { return t == KILN_TASK_CLM || t == KILN_TASK_MLM; }

#endif
