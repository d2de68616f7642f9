/* lower_layout.c — data movement: reshape (when it must be a copy), transpose, slice,
 * concat, broadcast, gather.
 *
 * Design: transpose, slice and broadcast are one strided copy each — a nest over the
 * result, reading the input at base + Σ idx·stride with the op's strides (permuted,
 * stepped, or 0 on broadcast dims) — after cg_collapse_dims has merged whatever runs are
 * contiguous. Values are moved as they are (f32 or i32 loads and stores never change
 * bits), so layout results equal the interpreter's exactly.
 *
 * A copy whose innermost dim reads the source with a stride (a transpose moving the last
 * dim) goes through 16×16 tiles instead, so reads and writes both stay near each other.
 * Every copy is split across threads by its outermost loop (cg_parallel_nest /
 * cg_parallel_for); each element is moved by one thread, so any split gives the same
 * bytes.
 *
 * gather checks every index before it reads anything (one vectorisable or-reduction of
 * "out of range" flags over all indices), so a bad token id returns KILN_RC_INDEX_RANGE
 * without a wild read, even when the result is empty; the rows are then copied in
 * parallel.
 *
 * update_slice writes only its update's rows when the memory planner put its result in
 * its operand's own storage (out == in0, a KV cache's new row): it copies the operand
 * first only when the two differ, so its out and in0 are the one pair of kernel
 * parameters that may alias (they lose noalias).
 */
#include <string.h>

#include "lower.h"

/* A copy's nest body: dst[off0] = src[off1]; vals = dst, src */
static void copy_elem(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    kiln_dtype dt = *(const kiln_dtype *)user;
    cg_store(cg, dt, vals[0], off[0], cg_load(cg, dt, vals[1], off[1]));
}

/* A strided copy whose innermost dim reads the source with a stride (a transpose that
 * moves the last dim) goes through TILE×TILE tiles of (p, last), p the dim the source
 * is contiguous along: within a tile the reads touch TILE cache lines and the writes
 * TILE runs of TILE, instead of one cache line per element read. */
enum { TILE = 16 };

typedef struct tiled_copy {
    kiln_dtype dt;
    int rank, p, last;
    const int64_t *dims;
    const int64_t (*stride)[KILN_MAX_RANK];
    int n_loops;          /* the other dims in order, then p's tiles, then last's tiles */
    int loop_dim[KILN_MAX_RANK];
    int64_t loop_n[KILN_MAX_RANK];
} tiled_copy;

static LLVMValueRef tile_end(kiln_cg *cg, LLVMValueRef lo, int64_t n)
{
    LLVMValueRef hi = LLVMBuildNSWAdd(cg->b, lo, cg_i64(cg, TILE), ""), nv = cg_i64(cg, n);
    return LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, hi, nv, ""), hi, nv, "");
}

/* items [begin, end) of the first loop; vals = dst, src */
static void tiled_copy_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const tiled_copy *tc = user;
    cg_loop loops[KILN_MAX_RANK + 2];
    LLVMValueRef off[2] = {cg_i64(cg, 0), cg_i64(cg, 0)}, tile_lo[2] = {NULL, NULL};
    for (int k = 0; k < tc->n_loops; k++) {
        cg_loop_begin(cg, &loops[k], k == 0 ? begin : cg_i64(cg, 0), k == 0 ? end : cg_i64(cg, tc->loop_n[k]), "i");
        int d = tc->loop_dim[k];
        if (d == tc->p || d == tc->last) {
            tile_lo[d == tc->last] = LLVMBuildNSWMul(cg->b, loops[k].i, cg_i64(cg, TILE), "");
            continue;
        }
        for (int o = 0; o < 2; o++)
            off[o] = LLVMBuildNSWAdd(cg->b, off[o], LLVMBuildNSWMul(cg->b, loops[k].i, cg_i64(cg, tc->stride[o][d]), ""), "");
    }
    int n = tc->n_loops;
    const int td[2] = {tc->p, tc->last};
    for (int t = 0; t < 2; t++) {
        cg_loop_begin(cg, &loops[n + t], tile_lo[t], tile_end(cg, tile_lo[t], tc->dims[td[t]]), "t");
        for (int o = 0; o < 2; o++)
            off[o] = LLVMBuildNSWAdd(cg->b, off[o], LLVMBuildNSWMul(cg->b, loops[n + t].i, cg_i64(cg, tc->stride[o][td[t]]), ""), "");
    }
    cg_store(cg, tc->dt, vals[0], off[0], cg_load(cg, tc->dt, vals[1], off[1]));
    for (int k = n + 1; k >= 0; k--) cg_loop_end(cg, &loops[k]);
}

/* Copies a strided view of `src` (offset base + Σ idx·src_stride) into the row-major
 * result `dst` of type t (transpose, slice, broadcast, copies). */
static void lower_strided_copy(kiln_cg *cg, const kiln_type *t, LLVMValueRef dst, LLVMValueRef src, int64_t base,
                               const int64_t *src_stride)
{
    if (kiln_type_numel(t) == 0) return;
    int64_t dims[KILN_MAX_RANK], stride[2][KILN_MAX_RANK];
    for (int d = 0; d < t->rank; d++) {
        dims[d] = t->dims[d];
        stride[1][d] = src_stride[d];
    }
    cg_row_major_strides(t, stride[0]);
    int rank = cg_collapse_dims(t->rank, dims, 2, stride);
    LLVMValueRef vals[2] = {dst, cg_byte_offset(cg, src, base * KILN_ELEM_BYTES)};
    kiln_dtype dt = t->dtype;

    int last = rank - 1, p = -1;
    for (int d = 0; d < last && rank >= 2 && stride[1][last] > 1; d++)
        if (stride[1][d] == 1) p = d;
    if (p < 0 || dims[p] < TILE || dims[last] < TILE) {
        cg_parallel_nest(cg, "copy", rank, dims, 2, (const int64_t(*)[KILN_MAX_RANK])stride, 1, vals, 2, copy_elem, &dt);
        return;
    }
    tiled_copy tc = {dt, rank, p, last, dims, (const int64_t(*)[KILN_MAX_RANK])stride, 0, {0}, {0}};
    for (int d = 0; d < last; d++)
        if (d != p) {
            tc.loop_dim[tc.n_loops] = d;
            tc.loop_n[tc.n_loops++] = dims[d];
        }
    tc.loop_dim[tc.n_loops] = p;
    tc.loop_n[tc.n_loops++] = (dims[p] + TILE - 1) / TILE;
    tc.loop_dim[tc.n_loops] = last;
    tc.loop_n[tc.n_loops++] = (dims[last] + TILE - 1) / TILE;
    int64_t items = tc.loop_n[0];
    cg_parallel_for(cg, "tiles", items, kiln_type_numel(t) / items, vals, 2, tiled_copy_body, &tc);
}

/* reshape into an output buffer: the bytes are already in order */
void lower_copy(lower_ctx *c)
{
    cg_memcpy(c->cg, c->out, c->in[0], kiln_type_numel(&c->node->type) * KILN_ELEM_BYTES);
}

void lower_transpose(lower_ctx *c)
{
    int64_t in_stride[KILN_MAX_RANK], stride[KILN_MAX_RANK];
    cg_row_major_strides(lower_in_type(c, 0), in_stride);
    for (int d = 0; d < c->node->type.rank; d++) stride[d] = in_stride[c->node->attrs.perm[d]];
    lower_strided_copy(c->cg, &c->node->type, c->out, c->in[0], 0, stride);
}

/* IR slices are normalised: element i along the axis is start + i·step, in bounds. */
void lower_slice(lower_ctx *c)
{
    const kiln_attrs *a = &c->node->attrs;
    int64_t stride[KILN_MAX_RANK];
    cg_row_major_strides(lower_in_type(c, 0), stride);
    int64_t base = kiln_type_numel(&c->node->type) ? a->start * stride[a->axis] : 0;
    stride[a->axis] *= a->step;
    lower_strided_copy(c->cg, &c->node->type, c->out, c->in[0], base, stride);
}

void lower_broadcast(lower_ctx *c)
{
    int64_t stride[KILN_MAX_RANK];
    cg_bcast_strides(lower_in_type(c, 0), c->node->type.rank, stride);
    lower_strided_copy(c->cg, &c->node->type, c->out, c->in[0], 0, stride);
}

/* Input k fills columns [pos, pos + len_k) of every outer row: a 2-D copy of
 * (outer, len_k·inner) from its row-major layout into the result's, split across
 * threads by rows (or in runs of elements when there is one row). */
void lower_concat(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type;
    kiln_dtype dt = ot->dtype;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(ot->dims, 0, ax), inner = cg_span(ot->dims, ax + 1, ot->rank);
    int64_t total = ot->dims[ax], pos = 0;
    for (uint32_t k = 0; k < c->node->n_in; k++) {
        int64_t len = lower_in_type(c, k)->dims[ax];
        int64_t dims[2] = {outer, len * inner};
        int64_t stride[2][KILN_MAX_RANK] = {{total * inner, 1}, {len * inner, 1}};
        if (outer * len * inner > 0) {
            int rank = cg_collapse_dims(2, dims, 2, stride);
            LLVMValueRef vals[2] = {cg_byte_offset(cg, c->out, pos * inner * KILN_ELEM_BYTES), c->in[k]};
            cg_parallel_nest(cg, "part", rank, dims, 2, (const int64_t(*)[KILN_MAX_RANK])stride, 1, vals, 2, copy_elem, &dt);
        }
        pos += len;
    }
}

typedef struct gather_job {
    kiln_dtype dt;
    int64_t n, n_ids, inner;
} gather_job;

/* result rows [begin, end) — row r = (o, j) — each the contiguous run
 * table[o, ids[j], ·]; vals = out, table, ids */
static void gather_rows(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const gather_job *gj = user;
    cg_loop r;
    cg_loop_begin(cg, &r, begin, end, "row");
    LLVMValueRef o = LLVMBuildSDiv(cg->b, r.i, cg_i64(cg, gj->n_ids), "");
    LLVMValueRef j = LLVMBuildSRem(cg->b, r.i, cg_i64(cg, gj->n_ids), "");
    LLVMValueRef row = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, vals[2], j), cg->t_i64, "");
    LLVMValueRef src = LLVMBuildNSWMul(cg->b, LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, o, cg_i64(cg, gj->n), ""), row, ""),
                                       cg_i64(cg, gj->inner), "");
    LLVMValueRef dst = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, gj->inner), "");
    cg_loop i;
    cg_loop_begin(cg, &i, cg_i64(cg, 0), cg_i64(cg, gj->inner), "i");
    LLVMValueRef v = cg_load(cg, gj->dt, vals[1], LLVMBuildNSWAdd(cg->b, src, i.i, ""));
    cg_store(cg, gj->dt, vals[0], LLVMBuildNSWAdd(cg->b, dst, i.i, ""), v);
    cg_loop_end(cg, &i);
    cg_loop_end(cg, &r);
}

/* numpy.take: out[o, j…, i] = table[o, ids[j…], i] with table (outer, n, inner). */
void lower_gather(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *tt = lower_in_type(c, 0), *it = lower_in_type(c, 1);
    kiln_dtype dt = c->node->type.dtype;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(tt->dims, 0, ax), n = tt->dims[ax], inner = cg_span(tt->dims, ax + 1, tt->rank);
    int64_t n_ids = kiln_type_numel(it);
    if (n_ids == 0) return;

    /* 1. any index outside [0, n)? */
    cg_return_if_index_outside(cg, c->in[1], n_ids, n);
    if (outer * inner == 0) return;

    /* 2. copy rows, split across threads by rows */
    gather_job gj = {dt, n, n_ids, inner};
    LLVMValueRef vals[3] = {c->out, c->in[0], c->in[1]};
    cg_parallel_for(cg, "rows", outer * n_ids, inner, vals, 3, gather_rows, &gj);
}

/* update_slice(x, u, start): out = x, then out[o, start + j, i] = u[o, j, i] with x (outer,
 * n, inner) and u (outer, m, inner). A start outside [0, n − m] returns
 * KILN_RC_INDEX_RANGE before anything is written. */
void lower_update_slice(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *xt = lower_in_type(c, 0), *ut = lower_in_type(c, 1);
    kiln_dtype dt = c->node->type.dtype;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(xt->dims, 0, ax), n = xt->dims[ax], m = ut->dims[ax];
    int64_t inner = cg_span(xt->dims, ax + 1, xt->rank);
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    LLVMRemoveEnumAttributeAtIndex(c->fn, 1, noalias); /* out */
    LLVMRemoveEnumAttributeAtIndex(c->fn, 2, noalias); /* in0: maybe out itself */

    LLVMValueRef start = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[2], cg_i64(cg, 0)), cg->t_i64, "start");
    cg_return_if(cg, LLVMBuildICmp(cg->b, LLVMIntUGT, start, cg_i64(cg, n - m), ""), KILN_RC_INDEX_RANGE);
    cg_if copy;
    cg_if_begin(cg, &copy, LLVMBuildICmp(cg->b, LLVMIntNE, c->out, c->in[0], ""));
    cg_memcpy(cg, c->out, c->in[0], kiln_type_numel(xt) * KILN_ELEM_BYTES);
    cg_if_end(cg, &copy);
    if (outer * m * inner == 0) return;
    /* u's rows: m·inner contiguous elements per outer index, a few hundred for a cache row */
    cg_loop o, i;
    cg_loop_begin(cg, &o, cg_i64(cg, 0), cg_i64(cg, outer), "o");
    LLVMValueRef dst = LLVMBuildNSWMul(cg->b, LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, o.i, cg_i64(cg, n), ""), start, ""),
                                       cg_i64(cg, inner), "");
    LLVMValueRef src = LLVMBuildNSWMul(cg->b, o.i, cg_i64(cg, m * inner), "");
    cg_loop_begin(cg, &i, cg_i64(cg, 0), cg_i64(cg, m * inner), "i");
    LLVMValueRef v = cg_load(cg, dt, c->in[1], LLVMBuildNSWAdd(cg->b, src, i.i, ""));
    cg_store(cg, dt, c->out, LLVMBuildNSWAdd(cg->b, dst, i.i, ""), v);
    cg_loop_end(cg, &i);
    cg_loop_end(cg, &o);
}
