/* lower_layout.c — data movement: reshape (when it must be a copy), transpose, slice,
 * concat, broadcast, gather.
 *
 * Design: transpose, slice and broadcast are one strided copy each — a nest over the
 * result, reading the input at base + Σ idx·stride with the op's strides (permuted,
 * stepped, or 0 on broadcast dims) — after cg_collapse_dims has merged whatever runs are
 * contiguous. Values are moved as they are (f32 or i32 loads and stores never change
 * bits), so layout results equal the interpreter's exactly.
 *
 * gather checks every index before it reads anything (one vectorisable or-reduction of
 * "out of range" flags over all indices), so a bad token id returns KILN_RC_INDEX_RANGE
 * without a wild read, even when the result is empty.
 */
#include "lower.h"

void lower_strided_copy(kiln_cg *cg, const kiln_type *t, LLVMValueRef dst, LLVMValueRef src, int64_t base,
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
    LLVMValueRef bases[2] = {cg_i64(cg, 0), cg_i64(cg, base)};
    cg_nest nest;
    cg_nest_begin(cg, &nest, rank, dims, 2, stride, bases);
    cg_store(cg, t->dtype, dst, nest.off[0], cg_load(cg, t->dtype, src, nest.off[1]));
    cg_nest_end(cg, &nest);
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
 * (outer, len_k·inner) from its row-major layout into the result's. */
void lower_concat(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(ot->dims, 0, ax), inner = cg_span(ot->dims, ax + 1, ot->rank);
    int64_t total = ot->dims[ax], pos = 0;
    for (uint32_t k = 0; k < c->node->n_in; k++) {
        int64_t len = lower_in_type(c, k)->dims[ax];
        int64_t dims[2] = {outer, len * inner};
        int64_t stride[2][KILN_MAX_RANK] = {{total * inner, 1}, {len * inner, 1}};
        if (outer * len * inner > 0) {
            int rank = cg_collapse_dims(2, dims, 2, stride);
            LLVMValueRef bases[2] = {cg_i64(cg, pos * inner), cg_i64(cg, 0)};
            cg_nest nest;
            cg_nest_begin(cg, &nest, rank, dims, 2, stride, bases);
            cg_store(cg, ot->dtype, c->out, nest.off[0], cg_load(cg, ot->dtype, c->in[k], nest.off[1]));
            cg_nest_end(cg, &nest);
        }
        pos += len;
    }
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

    /* 1. any index outside [0, n)? (sign-extended, compared unsigned: negatives are huge) */
    LLVMValueRef bad = cg_local(cg, cg->t_i1, "bad");
    LLVMBuildStore(cg->b, LLVMConstInt(cg->t_i1, 0, 0), bad);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n_ids), "j");
    LLVMValueRef id = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], l.i), cg->t_i64, "");
    LLVMValueRef out_of_range = LLVMBuildICmp(cg->b, LLVMIntUGE, id, cg_i64(cg, n), "");
    LLVMBuildStore(cg->b, LLVMBuildOr(cg->b, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), out_of_range, ""), bad);
    cg_loop_end(cg, &l);
    cg_return_if(cg, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), KILN_RC_INDEX_RANGE);
    if (outer * inner == 0) return;

    /* 2. copy rows: nest over (outer, n_ids), then the contiguous inner run */
    int64_t dims[2] = {outer, n_ids};
    int64_t stride[2][KILN_MAX_RANK] = {{n_ids * inner, inner}, {n * inner, 0}};
    cg_nest rows;
    cg_nest_begin(cg, &rows, 2, dims, 2, stride, NULL);
    LLVMValueRef j = rows.loop[1].i;
    LLVMValueRef row = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], j), cg->t_i64, "");
    LLVMValueRef src = LLVMBuildNSWAdd(cg->b, rows.off[1], LLVMBuildNSWMul(cg->b, row, cg_i64(cg, inner), ""), "");
    cg_loop i;
    cg_loop_begin(cg, &i, cg_i64(cg, 0), cg_i64(cg, inner), "i");
    LLVMValueRef v = cg_load(cg, dt, c->in[0], LLVMBuildNSWAdd(cg->b, src, i.i, ""));
    cg_store(cg, dt, c->out, LLVMBuildNSWAdd(cg->b, rows.off[0], i.i, ""), v);
    cg_loop_end(cg, &i);
    cg_nest_end(cg, &rows);
}
