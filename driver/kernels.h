/* kernels.h — the compiled kernels described for people: `kiln bench --per-kernel`
 * (kernels.c) and `kiln compile --emit dot` (dot.c). Kernel k is the schedule's k-th
 * kernel (passes/fuse.c), the order the entry calls them in. Each function writes a
 * NUL-terminated text into buf (truncated to size). */
#ifndef KILN_DRIVER_KERNELS_H
#define KILN_DRIVER_KERNELS_H

#include <stddef.h>

#include "passes.h"

/* "loop", "attention", "attention_grad", the op of a one-node kernel ("softmax"), or
 * "gemm" followed by its epilogue's ops ("gemm+add+gelu"). */
void kernel_kind(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size);
/* Its member ops in node order, repeats counted: "mul add×2 exp". */
void kernel_ops(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size);
/* The type of the value it writes last ("f32[8,256,384]"), with "+N" when it writes
 * N more values. */
void kernel_type(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size);
/* Where it comes from in the model file: the origin and label of the value it writes
 * last, the first parameter it reads (through views), and that value's node id
 * ("layers[2] blocks.0 (blocks.0.ff.fc2.weight) %48"). */
void kernel_where(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size);
/* All of that on one line: "gemm+add  2 ops [matmul add] f32[8,256,384]  layers[2] (…) %13". */
void kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size);
/* Its floating-point operations: the sum of kiln_node_flops over its members. */
int64_t kernel_flops(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k);

/* The schedule as Graphviz text (malloc'd). Without `nodes`: one box per kernel (kind,
 * member ops, type, origin), an edge per kernel whose results another reads, the
 * graph's inputs and outputs as ovals. With `nodes`: every computed node, each kernel's
 * members in one cluster, and the sources they read. */
char *dot_schedule(const kiln_graph *g, const kiln_kernel_schedule *s, bool nodes);

#endif
