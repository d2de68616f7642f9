/* lower_multi.c — a MULTI kernel: one elementwise loop [ending in a sum over every
 * element], the same for each of several tensors of different sizes (passes/fuse.c,
 * group_multi): AdamW's update of every parameter, Σg² of every gradient.
 *
 * Design. The parts are wired alike, so one loop serves them all; only their pointers
 * and lengths differ. The entry function fills a table of every part's operand pointers
 * on its stack (part after part, each part's operands in loop_operands order) and passes
 * it as the kernel's only argument:
 *
 *     void k<first>_multi<parts>(ptr table)
 *
 * The work is cut into chunks of at most MULTI_CHUNK elements of one part; the chunk
 * list (part, start, length) is constant data of the kernel, and cg_parallel_for splits
 * it across threads. A chunk runs
 *
 *     [float] k<first>_multi<parts>.chunk(ptr noalias op0, …, i64 len)
 *
 * with each operand pointer moved to the chunk's start (scalar operands — one element,
 * broadcast — stay put): a plain loop that loads each input once per element, computes
 * every member with the scalar function a one-node kernel applies (lower_scalar_op),
 * stores the values that leave, and returns the chunk's sum when the part ends in one.
 * Its noalias parameters let it vectorise as a LOOP kernel does. Chunk sums go to a
 * stack array; after the threads, each part's sum is added up from its chunks in order.
 * Each element and each chunk is computed by one thread the same way whatever the
 * partition, so results are identical for every thread count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

/* Elements per chunk: large enough that a chunk's call and table reads are noise, small
 * enough that the biggest parameter splits evenly across threads. */
#define MULTI_CHUNK 16384

static uint32_t part_member(const kiln_kernel_schedule *s, const multi_kernel *mk, uint32_t part, uint32_t i)
{
    const kiln_kernel *kn = &s->kernels[mk->k];
    return s->members[kn->first + part * mk->per_part + i];
}

void multi_kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k,
                           multi_kernel *mk)
{
    const kiln_kernel *kn = &s->kernels[k];
    KILN_ASSERT(kn->kind == KILN_KERNEL_MULTI && kn->parts > 1 && kn->n % kn->parts == 0);
    mk->k = k;
    mk->parts = kn->parts;
    mk->per_part = kn->n / kn->parts;
    mk->n_slots = loop_operands_of(g, s, p, k, &s->members[kn->first], mk->per_part, mk->ops);
    mk->table = calloc((size_t)mk->parts * (size_t)mk->n_slots + 1, sizeof *mk->table);
    KILN_ASSERT(mk->table != NULL);
    for (uint32_t q = 0; q < mk->parts; q++) {
        loop_operand ops[CG_MAX_OPS];
        int n = loop_operands_of(g, s, p, k, &s->members[kn->first + q * mk->per_part], mk->per_part, ops);
        /* fuse.c joined parts wired alike and memplan.c made their in-place updates agree */
        KILN_ASSERT(n == mk->n_slots);
        for (int o = 0; o < n; o++) {
            KILN_ASSERT(ops[o].writes == mk->ops[o].writes && (ops[o].reads == KILN_NONE) == (mk->ops[o].reads == KILN_NONE));
            mk->table[q * (uint32_t)n + (uint32_t)o] = ops[o].node;
        }
    }
}

/* ---- the chunk function -------------------------------------------------------------------- */

/* The elements of part 0 (every part's members have one shape, apart from the sum). */
static int64_t part_numel(const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk, uint32_t part)
{
    return kiln_type_numel(&g->nodes[part_member(s, mk, part, 0)].type);
}

/* The node whose memory operand o of part 0 holds (what its dtype and size are). */
static const kiln_node *slot_node(const kiln_graph *g, const multi_kernel *mk, int o)
{
    return &g->nodes[mk->ops[o].reads != KILN_NONE ? mk->ops[o].reads : mk->ops[o].node];
}

/* Whether operand o is a scalar: one element read at 0 (while the parts have more), or
 * the part's sum (written once, after the chunks). */
static bool slot_scalar(const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk, int o)
{
    if (g->nodes[mk->ops[o].node].op == KILN_OP_SUM && mk->ops[o].writes) return true;
    return kiln_type_numel(&slot_node(g, mk, o)->type) != part_numel(g, s, mk, 0);
}

static int find_reads(const multi_kernel *mk, uint32_t node)
{
    for (int o = 0; o < mk->n_slots; o++)
        if (mk->ops[o].reads == node) return o;
    return -1;
}

/* The part's sum member (index in the part), or -1. */
static int sum_member(const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk)
{
    for (uint32_t i = 0; i < mk->per_part; i++)
        if (g->nodes[part_member(s, mk, 0, i)].op == KILN_OP_SUM) return (int)i;
    return -1;
}

static LLVMValueRef emit_chunk_fn(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk,
                                  const char *name)
{
    int sm = sum_member(g, s, mk);
    LLVMTypeRef params[CG_MAX_OPS + 1];
    for (int o = 0; o < mk->n_slots; o++) params[o] = cg->t_ptr;
    params[mk->n_slots] = cg->t_i64;
    LLVMTypeRef ret = sm >= 0 ? cg->t_f32 : cg->t_void;
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(ret, params, (unsigned)mk->n_slots + 1, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    const char *fattrs[] = {"nounwind", "noinline"};
    for (int i = 0; i < 2; i++) {
        unsigned kind = LLVMGetEnumAttributeKindForName(fattrs[i], strlen(fattrs[i]));
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
    }
    for (int o = 0; o < mk->n_slots; o++) {
        const char *pattrs[] = {"noalias", "nocapture"};
        for (int i = 0; i < 2; i++) {
            unsigned kind = LLVMGetEnumAttributeKindForName(pattrs[i], strlen(pattrs[i]));
            LLVMAddAttributeAtIndex(fn, (unsigned)o + 1, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
        }
    }
    kiln_target_tag_function(cg->target, fn);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));

    LLVMValueRef acc = NULL;
    if (sm >= 0) {
        acc = cg_local(cg, cg->t_f32, "acc");
        LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc);
    }
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), LLVMGetParam(fn, (unsigned)mk->n_slots), "i");
    LLVMValueRef zero = cg_i64(cg, 0), loaded[CG_MAX_OPS] = {0}, value[CG_MAX_OPS] = {0};
    KILN_ASSERT(mk->per_part <= CG_MAX_OPS);
    for (uint32_t i = 0; i < mk->per_part; i++) {
        uint32_t id = part_member(s, mk, 0, i);
        const kiln_node *n = &g->nodes[id];
        LLVMValueRef x[3];
        KILN_ASSERT(n->n_in <= 3);
        for (uint32_t j = 0; j < n->n_in; j++) {
            uint32_t in = n->in[j];
            if (s->kernel_of[in] == mk->k) { /* a member before this one */
                uint32_t mi = 0;
                while (part_member(s, mk, 0, mi) != in) mi++;
                x[j] = value[mi];
                continue;
            }
            int o = find_reads(mk, in);
            KILN_ASSERT(o >= 0);
            if (!loaded[o])
                loaded[o] = cg_load(cg, g->nodes[in].type.dtype, LLVMGetParam(fn, (unsigned)o),
                                    slot_scalar(g, s, mk, o) ? zero : l.i);
            x[j] = loaded[o];
        }
        if (n->op == KILN_OP_SUM) {
            LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""), x[0]), acc);
            continue;
        }
        value[i] = cg_node_result(cg, lower_scalar_op(cg, n, x)); /* no FMA with a later member */
    }
    for (int o = 0; o < mk->n_slots; o++) {
        if (!mk->ops[o].writes || g->nodes[mk->ops[o].node].op == KILN_OP_SUM) continue;
        uint32_t mi = 0;
        while (part_member(s, mk, 0, mi) != mk->ops[o].node) mi++;
        cg_store(cg, g->nodes[mk->ops[o].node].type.dtype, LLVMGetParam(fn, (unsigned)o), l.i, value[mi]);
    }
    if (sm >= 0) cg_loop_end_interleaved(cg, &l, 4);
    else cg_loop_end(cg, &l);
    if (sm >= 0) LLVMBuildRet(cg->b, LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""));
    else LLVMBuildRetVoid(cg->b);
    return fn;
}

/* ---- the kernel ------------------------------------------------------------------------------ */

/* A constant internal array global of i64 values. */
static LLVMValueRef const_i64_array(kiln_cg *cg, const char *name, const int64_t *v, size_t n)
{
    LLVMValueRef *elems = calloc(n ? n : 1, sizeof *elems);
    KILN_ASSERT(elems != NULL);
    for (size_t i = 0; i < n; i++) elems[i] = cg_i64(cg, v[i]);
    LLVMTypeRef ty = LLVMArrayType2(cg->t_i64, n);
    LLVMValueRef gv = LLVMAddGlobal(cg->mod, ty, name);
    LLVMSetInitializer(gv, LLVMConstArray2(cg->t_i64, elems, n));
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    free(elems);
    return gv;
}

static LLVMValueRef load_i64_at(kiln_cg *cg, LLVMValueRef array, LLVMValueRef i)
{
    return LLVMBuildLoad2(cg->b, cg->t_i64, LLVMBuildInBoundsGEP2(cg->b, cg->t_i64, array, &i, 1, ""), "");
}

/* The address of operand o of a part: bases[b] + offset for the pair (b, offset) at
 * table[part · n_slots + o]. */
static LLVMValueRef table_ptr(kiln_cg *cg, const multi_kernel *mk, LLVMValueRef bases, LLVMValueRef table,
                              LLVMValueRef part, int o)
{
    LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, part, cg_i64(cg, 2 * mk->n_slots), ""), cg_i64(cg, 2 * o), "");
    LLVMValueRef b = load_i64_at(cg, table, at);
    LLVMValueRef offset = load_i64_at(cg, table, LLVMBuildAdd(cg->b, at, cg_i64(cg, 1), ""));
    LLVMValueRef base = LLVMBuildLoad2(cg->b, cg->t_ptr, LLVMBuildInBoundsGEP2(cg->b, cg->t_ptr, bases, &b, 1, ""), "");
    return LLVMBuildGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), base, &offset, 1, "");
}

typedef struct multi_body {
    const kiln_graph *g;
    const kiln_kernel_schedule *s;
    const multi_kernel *mk;
    LLVMValueRef chunk_fn, chunk_part, chunk_start, chunk_len;
    bool has_sum;
} multi_body;

/* Chunks [begin, end): vals = {bases, table, partial sums}. */
static void emit_chunks(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    multi_body *mb = user;
    const multi_kernel *mk = mb->mk;
    cg_loop l;
    cg_loop_begin(cg, &l, begin, end, "c");
    LLVMValueRef part = load_i64_at(cg, mb->chunk_part, l.i);
    LLVMValueRef start = load_i64_at(cg, mb->chunk_start, l.i);
    LLVMValueRef args[CG_MAX_OPS + 1];
    for (int o = 0; o < mk->n_slots; o++) {
        args[o] = table_ptr(cg, mk, vals[0], vals[1], part, o);
        if (!slot_scalar(mb->g, mb->s, mk, o)) args[o] = cg_gep(cg, slot_node(mb->g, mk, o)->type.dtype, args[o], start);
    }
    args[mk->n_slots] = load_i64_at(cg, mb->chunk_len, l.i);
    LLVMValueRef sum = LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(mb->chunk_fn), mb->chunk_fn, args,
                                      (unsigned)mk->n_slots + 1, "");
    if (mb->has_sum) cg_store(cg, KILN_F32, vals[2], l.i, sum);
    cg_loop_end(cg, &l);
}

LLVMValueRef lower_multi_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk)
{
    char name[96];
    snprintf(name, sizeof name, "k%u_multi%u.chunk", part_member(s, mk, 0, 0), mk->parts);
    LLVMValueRef chunk_fn = emit_chunk_fn(cg, g, s, mk, name);

    /* the chunks: (part, start, length), part after part */
    int64_t n_chunks = 0;
    for (uint32_t q = 0; q < mk->parts; q++) n_chunks += (part_numel(g, s, mk, q) + MULTI_CHUNK - 1) / MULTI_CHUNK;
    int64_t *cpart = calloc((size_t)n_chunks, sizeof *cpart), *cstart = calloc((size_t)n_chunks, sizeof *cstart);
    int64_t *clen = calloc((size_t)n_chunks, sizeof *clen), *pfirst = calloc(mk->parts + 1, sizeof *pfirst);
    KILN_ASSERT(cpart && cstart && clen && pfirst);
    int64_t c = 0;
    for (uint32_t q = 0; q < mk->parts; q++) {
        int64_t numel = part_numel(g, s, mk, q);
        KILN_ASSERT(numel > 0);
        pfirst[q] = c;
        for (int64_t at = 0; at < numel; at += MULTI_CHUNK, c++) {
            cpart[c] = q;
            cstart[c] = at;
            clen[c] = numel - at < MULTI_CHUNK ? numel - at : MULTI_CHUNK;
        }
    }
    pfirst[mk->parts] = c;

    snprintf(name, sizeof name, "k%u_multi%u", part_member(s, mk, 0, 0), mk->parts);
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, 2);
    LLVMValueRef bases = LLVMGetParam(fn, 0), table = LLVMGetParam(fn, 1);
    LLVMSetValueName2(bases, "bases", 5);
    LLVMSetValueName2(table, "table", 5);
    char gname[128];
    multi_body mb = {g, s, mk, chunk_fn, NULL, NULL, NULL, sum_member(g, s, mk) >= 0};
    snprintf(gname, sizeof gname, "%s.chunk_part", name);
    mb.chunk_part = const_i64_array(cg, gname, cpart, (size_t)n_chunks);
    snprintf(gname, sizeof gname, "%s.chunk_start", name);
    mb.chunk_start = const_i64_array(cg, gname, cstart, (size_t)n_chunks);
    snprintf(gname, sizeof gname, "%s.chunk_len", name);
    mb.chunk_len = const_i64_array(cg, gname, clen, (size_t)n_chunks);
    LLVMValueRef partial = mb.has_sum ? cg_local(cg, LLVMArrayType2(cg->t_f32, (uint64_t)n_chunks), "partial") : table;
    LLVMValueRef vals[3] = {bases, table, partial};
    int64_t per_chunk = (int64_t)mk->per_part * MULTI_CHUNK;
    cg_parallel_for(cg, "chunks", n_chunks, per_chunk > 0 ? per_chunk : 1, vals, 3, emit_chunks, &mb);

    if (mb.has_sum) { /* each part's sum: its chunks' sums in order */
        snprintf(gname, sizeof gname, "%s.part_first", name);
        LLVMValueRef first = const_i64_array(cg, gname, pfirst, mk->parts + 1);
        int sum_slot = -1;
        for (int o = 0; o < mk->n_slots; o++)
            if (mk->ops[o].writes && g->nodes[mk->ops[o].node].op == KILN_OP_SUM) sum_slot = o;
        KILN_ASSERT(sum_slot >= 0);
        cg_loop lp;
        cg_loop_begin(cg, &lp, cg_i64(cg, 0), cg_i64(cg, mk->parts), "q");
        LLVMValueRef acc = cg_local(cg, cg->t_f32, "total");
        LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc);
        cg_loop lc;
        cg_loop_begin(cg, &lc, load_i64_at(cg, first, lp.i),
                      load_i64_at(cg, first, LLVMBuildAdd(cg->b, lp.i, cg_i64(cg, 1), "")), "c");
        LLVMBuildStore(cg->b, cg_fadd(cg, LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""), cg_load(cg, KILN_F32, partial, lc.i)),
                       acc);
        cg_loop_end(cg, &lc);
        cg_store(cg, KILN_F32, table_ptr(cg, mk, bases, table, lp.i, sum_slot), cg_i64(cg, 0),
                 LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""));
        cg_loop_end(cg, &lp);
    }
    LLVMBuildRetVoid(cg->b);
    free(cpart);
    free(cstart);
    free(clen);
    free(pfirst);
    return fn;
}
