/* kiln/params.h — filling an exported model's parameter blob from a safetensors file.
 *
 * This is the runtime piece that `kiln compile` links into every exported library: the
 * generated NAME_load(params, path) is a two-line wrapper around kiln_params_load with
 * the model's parameter table. Because it ends up inside users' programs it keeps the
 * exported library's promises: libc only (POSIX open/pread/fstat/close — not stdio,
 * whose FILE is heap-allocated), no allocation at all (the header is parsed as a stream
 * through a small fixed buffer on the stack; data is converted in place in the blob),
 * under 3 KiB of stack, nothing printed, thread-safe (no static state),
 * and every hostile file is refused with a status rather than a crash.
 *
 * kiln_param_info is the exact struct every generated header declares, behind the same
 * guard, so this header and any number of generated headers can share one program.
 */
#ifndef KILN_PARAMS_H
#define KILN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KILN_PARAM_INFO_DEFINED
#define KILN_PARAM_INFO_DEFINED
/* One parameter of an exported model: where it lives in the parameter blob. */
typedef struct kiln_param_info {
    const char *name;   /* the parameter's name, as in weights files ("blocks.0.attn.q.weight") */
    size_t offset;      /* bytes from the start of the blob (64-byte aligned) */
    int rank;
    int64_t shape[8];   /* entries past rank are 0 */
} kiln_param_info;

/* What NAME_load returns (0 = success). */
enum {
    KILN_LOAD_OK = 0,
    KILN_LOAD_IO = 1,       /* cannot open or read the file */
    KILN_LOAD_FORMAT = 2,   /* not a well-formed safetensors file (or a name twice, or a
                               parameter's bytes overlapping another tensor's) */
    KILN_LOAD_MISSING = 3,  /* a parameter of the model is not in the file */
    KILN_LOAD_SHAPE = 4,    /* a parameter has another shape in the file */
    KILN_LOAD_DTYPE = 5,    /* a parameter's dtype is not F32, F16, BF16 or F64 (or an F64
                               value does not fit in f32) */
    KILN_LOAD_NULL_ARG = 6, /* NAME_load: the blob or the path is NULL */
    KILN_LOAD_MISALIGNED = 7 /* NAME_load: the blob is not float-aligned */
};
#endif

/* The longest tensor name kiln_params_load compares in full; a longer name in a file
 * matches no parameter (kiln's parameter names are far shorter). */
#define KILN_PARAMS_MAX_NAME 512

/* Reads `path` and writes each of the n parameters (f32, converted from F16/BF16/F64 if
 * needed) to (char *)blob + params[i].offset. Tensors the model does not have are
 * ignored, but for their place in the data section. A FORMAT problem — a malformed
 * header, a parameter named twice, a range outside the data section, a parameter's
 * bytes shared with another tensor — is reported before any MISSING, SHAPE or DTYPE
 * one, as kiln's own reader orders them (a name twice or an overlap between two
 * tensors the model does not have is not looked for: that would need memory in
 * proportion to the file). `seen` is n bytes of caller scratch (the generated wrapper keeps it on its
 * stack). Returns a KILN_LOAD_* code; on failure the blob's contents are unspecified. */
int kiln_params_load(void *blob, const char *path, const kiln_param_info *params, int n, unsigned char *seen);

#ifdef __cplusplus
}
#endif

#endif
