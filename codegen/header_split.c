/* header_split.c — the split training step's part of an exported header (`kiln compile
 * --train`; driver/trainsplit.c builds the graphs, docs/distributed.md explains the use):
 * NAME_train_grad and NAME_train_apply, the split optimizer blob's size and where its
 * gradient area is. aot.c places it before the header's closing lines, as it does the
 * generation part, so the rest of the header stays as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"


/* A C initializer list of n numbers, as a macro's body. */
static void add_list(char **s, size_t *len, const char *up, const char *what, const int64_t *v, uint32_t n)
{
    kiln_header_add(s, len, "#define %s_%s {", up, what);
    for (uint32_t i = 0; i < n; i++) kiln_header_add(s, len, "%s%s%lld", i ? "," : "", i % 16 == 15 ? " \\\n    " : "", (long long)v[i]);
    kiln_header_add(s, len, "}\n");
}

char *kiln_header_split_text(const kiln_compile_request *grad, const kiln_memplan *grad_plan,
                             const kiln_compile_request *apply, const kiln_memplan *apply_plan,
                             int64_t grad_offset, const kiln_split_grads *grads)
{
    const char *name = grad->name ? grad->name : grad->g->name;
    char up[256];
    kiln_header_upper(name, up, sizeof up);
    int64_t ws = (grad_plan->workspace_bytes > apply_plan->workspace_bytes ? grad_plan->workspace_bytes
                                                                           : apply_plan->workspace_bytes) +
                 KILN_WORKSPACE_SLACK;
    char *s = NULL;
    size_t len = 0;
    kiln_header_add(&s, &len,
        "/* The training step in two halves, for averaging gradients between them (data-parallel\n"
        " * training over MPI or anything else; kiln's runtime stays free of it):\n"
        " *     %s_train_grad(params, optim, ws, inputs…, &loss, NULL, NULL);  this process's gradients\n"
        " *     average the floats optim[%s_GRAD_OFFSET/4 …+ %s_GRAD_FLOATS) over the processes\n"
        " *         (e.g. MPI_Allreduce(MPI_IN_PLACE, …, MPI_SUM) then ×1/N);\n"
        " *     %s_train_apply(params, optim, ws, lr);                             the same update everywhere\n"
        " * optim is %s_SPLIT_OPTIM_BYTES, zeroed before the first step: the optimizer state laid\n"
        " * out as %s_train_step's (%s_GRAD_OFFSET bytes; save it to move between the two\n"
        " * forms), then one gradient per trained parameter. The workspace is\n"
        " * %s_SPLIT_WORKSPACE_BYTES. Gradient clipping sees the averaged gradients (the global\n"
        " * norm). %s_train_grad returns 0 or KILN_FORWARD_* (nothing updated); it writes only\n"
        " * the gradient area.\n"
        " *\n"
        " * Overlap: its last two arguments are a callback and its context (NULL, NULL: none).\n"
        " * It calls ready(ctx, i) for each gradient i < %s_N_GRADS — the floats\n"
        " * optim[off[i]/4 …+ n[i]), with off = %s_GRAD_OFFSETS (bytes), n = %s_GRAD_SIZES\n"
        " * (floats) — as soon as the backward pass has finished it: from then on the call\n"
        " * neither reads nor writes it, so the program may start averaging it (e.g. an\n"
        " * MPI_Iallreduce of a bucket whose gradients are all ready, and MPI_Testall in\n"
        " * later calls so that MPI makes progress) while the backward pass goes on. The\n"
        " * calls come from the calling thread in the order %s_GRAD_READY_ORDER (the last\n"
        " * layers first), the same in every call; none after a failure. */\n",
        name, up, up, name, up, name, up, up, name, up, up, up, up);
    kiln_header_add(&s, &len, "#define %s_SPLIT_OPTIM_BYTES %lld\n", up, (long long)apply_plan->optim_bytes);
    kiln_header_add(&s, &len, "#define %s_GRAD_OFFSET %lld\n", up, (long long)grad_offset);
    kiln_header_add(&s, &len, "#define %s_GRAD_FLOATS %lld\n", up, (long long)((apply_plan->optim_bytes - grad_offset) / 4));
    kiln_header_add(&s, &len, "#define %s_SPLIT_WORKSPACE_BYTES %lld\n", up, (long long)ws);
    kiln_header_add(&s, &len, "#define %s_N_GRADS %u\n", up, grads->n);
    add_list(&s, &len, up, "GRAD_OFFSETS", grads->offsets, grads->n);
    add_list(&s, &len, up, "GRAD_SIZES", grads->floats, grads->n);
    add_list(&s, &len, up, "GRAD_READY_ORDER", grads->order, grads->n);
    kiln_header_add(&s, &len, "\n");
    kiln_header_add(&s, &len, "int %s_train_grad(const float *params, float *optim, void *workspace", name);
    for (uint32_t k = 0; k < grad->n_inputs; k++) {
        const kiln_node *n = &grad->g->nodes[grad->inputs[k]];
        char arg[64];
        size_t j = 0;
        for (const char *c = n->attrs.name; *c && j + 1 < sizeof arg; c++, j++)
            arg[j] = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ? *c : '_';
        arg[j] = 0;
        kiln_header_add(&s, &len, ",\n        const %s *in_%s /* %s[", n->type.dtype == KILN_I32 ? "int32_t" : "float", arg,
            kiln_dtype_name(n->type.dtype));
        for (int d = 0; d < n->type.rank; d++) kiln_header_add(&s, &len, "%s%lld", d ? ", " : "", (long long)n->type.dims[d]);
        kiln_header_add(&s, &len, "] */");
    }
    kiln_header_add(&s, &len, ",\n        float *loss /* f32[] */,\n        void (*ready)(void *ctx, int32_t i), void *ctx);\n");
    kiln_header_add(&s, &len, "int %s_train_apply(float *params, float *optim, void *workspace, float lr);\n\n", name);
    (void)apply;
    return s;
}
