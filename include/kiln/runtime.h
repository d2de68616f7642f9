/* kiln/runtime.h — the runtime's public API: aligned memory, safetensors files, threads.
 *
 * The runtime is the small C library shared by the driver, JIT-compiled code and
 * exported (AOT) libraries, so it depends on libc, libm and pthreads only. Errors are
 * values: every fallible call returns 0 on success or non-zero on failure and fills a
 * caller-owned kiln_rt_error with one line of text naming the file (and the tensor,
 * where there is one). Nothing here prints, exits or aborts on bad input.
 *
 * Tensors in memory are always f32 or i32, row-major, in 64-byte aligned buffers from
 * kiln_aligned_alloc. Files may hold other dtypes; reading converts them (see
 * kiln_tensor_file_read) so that no other layer ever sees f16, bf16 or i64.
 */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A fixed-size message buffer, so that reporting an error never needs to allocate
 * (the allocation may be what failed). Truncated if longer. */
typedef struct kiln_rt_error {
    char msg[256];
} kiln_rt_error;

/* ---- aligned memory ------------------------------------------------------------ */

/* Every buffer the runtime hands out or compiled code touches is 64-byte aligned (one
 * cache line, one AVX-512 vector), so kernels may use aligned vector loads.
 *
 * kiln_aligned_alloc returns zeroed memory whose usable size is `size` rounded up to a
 * multiple of 64 (a vector loop may read a whole last vector). Size 0 gives a valid,
 * unique pointer, so NULL always means failure: out of memory or a size too large to
 * round up. Release with kiln_aligned_free (NULL is allowed). */
void *kiln_aligned_alloc(size_t size);
void kiln_aligned_free(void *p);

/* ---- files -------------------------------------------------------------------------- */

struct stat;
/* Opens path to read (O_CLOEXEC, blocking reads) if it is a regular file, filling *st:
 * the descriptor, -1 when open failed (errno says why) or -2 when it is not a regular
 * file (a device, a FIFO, a directory: closed again; opening a FIFO does not wait). */
int kiln_open_regular(const char *path, struct stat *st);

/* ---- tensors and safetensors files ----------------------------------------------- */

/* One named tensor. numel = product of shape[0..rank) (1 for rank 0); any dim may be 0.
 * In a kiln_tensor_file the name and data are owned by the file; when passed to
 * kiln_tensor_file_write they are only read. */
typedef struct kiln_tensor {
    char *name;
    kiln_dtype dtype;             /* KILN_F32 or KILN_I32 */
    int rank;                     /* 0 .. KILN_MAX_RANK */
    int64_t shape[KILN_MAX_RANK]; /* entries past rank are 0 */
    void *data;                   /* float[numel] or int32_t[numel], 64-byte aligned */
} kiln_tensor;

/* The whole content of a safetensors file: tensors in header order, and the string
 * pairs of "__metadata__" in header order. */
typedef struct kiln_tensor_file {
    kiln_tensor *tensors;
    int n;
    char **meta_keys;
    char **meta_values;
    int n_meta;
} kiln_tensor_file;

/* Product of the dims; the reader and writer guarantee it does not overflow for any
 * tensor they accept. */
int64_t kiln_tensor_numel(const kiln_tensor *t);

/* Reads a whole safetensors file into *out (which the caller then frees with
 * kiln_tensor_file_free). Why so strict: weights come from anywhere, so every field
 * is validated (JSON syntax, types, dtypes, ranks, shape overflow, offsets inside the
 * data section, sizes matching shapes, no overlaps or duplicate names) before anything
 * proportional to the header's claims is allocated.
 *
 * dtypes: F32 and I32 load as they are; F16, BF16 and F64 become f32 (F64 values
 * outside f32's finite range are an error, inf and nan are kept); I64, U64, U32 become
 * i32 with a range check; I16, U16, I8, U8 and BOOL widen to i32. Anything else is
 * refused by name.
 *
 * Returns 0 on success. On failure *out is left empty (safe to free) and err says why. */
int kiln_tensor_file_read(const char *path, kiln_tensor_file *out, kiln_rt_error *err);

/* The tensor called `name`, or NULL. A linear scan: files hold at most thousands of
 * tensors and are looked up once per parameter at load time. */
const kiln_tensor *kiln_tensor_file_find(const kiln_tensor_file *f, const char *name);

/* The metadata value for `key`, or NULL (checkpoints keep step, RNG state, tokenizer
 * and model file there). */
const char *kiln_tensor_file_meta(const kiln_tensor_file *f, const char *key);

/* Frees everything *f owns and zeroes it, so a second call does nothing. */
void kiln_tensor_file_free(kiln_tensor_file *f);

/* Writes tensors (f32/i32, in the given order) and optional string metadata as a
 * standard safetensors file that PyTorch / Hugging Face can load: header padded with
 * spaces so the data section starts 8-byte aligned, tensors packed back to back.
 * meta_keys/meta_values may be NULL when n_meta is 0.
 *
 * Why atomic: a checkpoint is often written over the previous one, and a crash or a
 * full disk must never leave a torn file. The bytes go to a temporary file in the
 * same directory, are flushed and fsync'ed, then renamed over `path`; on any failure
 * the temporary is removed and an existing `path` is untouched.
 *
 * Refuses (non-zero, with a message) empty or duplicate names, a tensor named
 * "__metadata__", bad ranks, dims or dtypes, NULL data for a non-empty tensor, names or
 * metadata that are not valid UTF-8, and duplicate metadata keys. */
int kiln_tensor_file_write(const char *path, const kiln_tensor *tensors, int n,
                           const char *const *meta_keys, const char *const *meta_values, int n_meta,
                           kiln_rt_error *err);

/* ---- threads ------------------------------------------------------------------------ */

/* Compiled kernels split their work with kiln_parallel_for over a small persistent
 * pthread pool (runtime/threads.c). The partition is fixed by (n_items, n threads):
 * P = min(n_items, 4·n) chunks, chunk i = [n_items·i/P, n_items·(i+1)/P), each one call
 * fn(ctx, begin, end) (none for an empty chunk); which thread runs which chunk depends on
 * timing (the caller and the awake workers claim chunks), so fn must compute each item
 * the same way in any chunk and on any thread — compiled kernels do, which is why their
 * results are the same bits for any thread count.
 *
 * kiln_threads_set(n): n threads in all, the caller included, capped at KILN_MAX_THREADS;
 * 1 (the start) runs everything inline. Returns non-zero for n < 1 or when a thread
 * cannot be started (the pool then runs inline). Not to be called while a
 * kiln_parallel_for is running. A kiln_parallel_for made while another runs (from inside fn, or
 * from another thread) runs inline on its caller. */
enum { KILN_MAX_THREADS = 8 };
int kiln_threads_set(int n);
int kiln_threads_get(void);
void kiln_parallel_for(void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t n_items);

/* kiln_parallel_for2(fn1, n1, fn2, n2, ctx): kiln_parallel_for(fn1, ctx, n1) and then
 * kiln_parallel_for(fn2, ctx, n2), every item of the first done before any of the second
 * starts, in one hand-off (the chunks of both as one claimable sequence). A GEMM: the
 * shared operand's packing, then the parts. Nested or on one thread: fn1 then fn2 inline. */
void kiln_parallel_for2(void (*fn1)(void *ctx, int64_t begin, int64_t end), int64_t n1,
                        void (*fn2)(void *ctx, int64_t begin, int64_t end), int64_t n2, void *ctx);

/* kiln_threads_stats(out, enable): out (if not NULL) receives and resets, since the last
 * call, {jobs published, chunks run by the caller, by the workers, worker sleeps, caller sleeps, ns from publishing to the workers' first look
 * (summed over wakes), ns the caller waited after its own share, workers' first looks
 * made on the CPU the caller published from, ns from publishing to the end of phase 1
 * (kiln_parallel_for2), CPU ns in phase 1's chunks (all threads), CPU ns the caller and
 * the workers spent in chunks, wall ns of the same, wall ns phase-2 chunks waited for
 * phase 1}; then turns counting on or off (off at the start: counting
 * reads the clock). A diagnostic for gemm_bench. */
enum { KILN_THREADS_STATS = 15 };
void kiln_threads_stats(int64_t out[KILN_THREADS_STATS], int enable);

/* ---- per-kernel profiling (runtime/profile.c; not in exported libraries) ------------ */

/* An entry compiled with profiling (kiln_compile_request.profile) calls
 * kiln_profile_mark(k) before kernel k, kiln_profile_mark(n_kernels) before its final
 * copies and kiln_profile_mark(-1) before returning. Each mark adds the monotonic time
 * since the previous mark to the slot that mark opened (slots outside [0, n_slots) are
 * not timed), summed over calls in nanoseconds. kiln_profile_start(n) (re)allocates n
 * zeroed slots (non-zero on failure, then marks time nothing); kiln_profile_reset zeroes
 * them; kiln_profile_ns / kiln_profile_calls are the per-slot sums (NULL before start);
 * kiln_profile_stop frees them. One static record: one profiled entry runs at a time. */
int kiln_profile_start(int n_slots);
void kiln_profile_reset(void);
void kiln_profile_mark(int slot);
const int64_t *kiln_profile_ns(void);
const int64_t *kiln_profile_calls(void);
void kiln_profile_stop(void);

#ifdef __cplusplus
}
#endif

#endif
