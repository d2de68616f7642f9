/* kiln/types.h — the few types every layer shares: element types and ranks.
 *
 * Header-only and dependency-free so that the IR, the runtime (which is linked
 * into exported libraries) and the driver can all include it without pulling
 * each other in. */
#ifndef KILN_TYPES_H
#define KILN_TYPES_H

#include <stdint.h>

/* Largest tensor rank anywhere in kiln (the exported kiln_param_info has shape[8]). */
#define KILN_MAX_RANK 8

typedef enum kiln_dtype {
    KILN_F32 = 0,
    KILN_I32 = 1,
} kiln_dtype;

static inline const char *kiln_dtype_name(kiln_dtype t) { return t == KILN_I32 ? "i32" : "f32"; }

/* Both element types are 4 bytes; code that sizes buffers says so through this. */
#define KILN_ELEM_BYTES 4

#endif
