/* header_generate.c — the generation part of an exported header (`kiln compile
 * --generate`; docs/generation.md): the sizes of the KV cache and of the generation
 * workspace, the context and vocabulary, and the prototypes of NAME_prefill and
 * NAME_decode_step. aot.c places it inside the header kiln_header_text writes, before
 * the closing lines, so the forward part stays exactly as without --generate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"


/* One entry's prototype: the blobs, then its inputs in the request's order (the tokens,
 * the step's position or the prefill's prompt length, an encoder–decoder's source and
 * mask), then the logits: one row of VOCAB in both. */
static void prototype(char **s, size_t *len, const char *name, const char *up, const kiln_compile_request *r,
                      bool step)
{
    kiln_header_add(s, len, "int %s_%s(const float *params, float *kv_cache, void *workspace", name, step ? "decode_step" : "prefill");
    for (uint32_t i = 0; i < r->n_inputs; i++) {
        const kiln_node *in = &r->g->nodes[r->inputs[i]];
        const char *ty = in->type.dtype == KILN_F32 ? "float" : "int32_t", *what = in->attrs.name;
        char size[96];
        if (i == 0) { /* the generated tokens */
            what = step ? "token" : "tokens";
            snprintf(size, sizeof size, step ? "1" : "%s_CONTEXT", up);
        } else if (!strcmp(what, "kv.pos") || !strcmp(what, "kv.len")) {
            what = !strcmp(what, "kv.pos") ? "pos" : "n";
            snprintf(size, sizeof size, "1");
        } else { /* an encoder-decoder's source or its mask: (1, source length) */
            snprintf(size, sizeof size, "%s_SOURCE_LEN", up);
        }
        kiln_header_add(s, len, ",\n        const %s *%s /* [%s] */", ty, what, size);
    }
    kiln_header_add(s, len, ",\n        float *logits /* [%s_VOCAB] */);\n", up);
}

char *kiln_header_generate_text(const kiln_compile_request *prefill, const kiln_memplan *prefill_plan,
                                const kiln_compile_request *step, const kiln_memplan *step_plan)
{
    const char *name = prefill->name ? prefill->name : prefill->g->name;
    char up[256];
    kiln_header_upper(name, up, sizeof up);
    const kiln_type *tokens = &prefill->g->nodes[prefill->inputs[0]].type;      /* (1, context) */
    const kiln_type *logits = &step->g->nodes[step->g->outputs[0].node].type;   /* (1, 1, vocab) */
    int64_t context = tokens->dims[1], vocab = logits->dims[logits->rank - 1], source = 0;
    for (uint32_t k = 1; k < prefill->n_inputs; k++) /* an encoder-decoder's src: (1, source length) */
        if (!strcmp(prefill->g->nodes[prefill->inputs[k]].attrs.name, "src"))
            source = prefill->g->nodes[prefill->inputs[k]].type.dims[1];
    int64_t ws = (prefill_plan->workspace_bytes > step_plan->workspace_bytes ? prefill_plan->workspace_bytes
                                                                             : step_plan->workspace_bytes) +
                 KILN_WORKSPACE_SLACK;
    char *s = NULL;
    size_t len = 0;
    kiln_header_add(&s, &len,
        "/* Generation with a KV cache (kiln compile --generate). A cache of %s_KV_CACHE_BYTES\n"
        " * (float-aligned) holds every self-attention's keys and values for %s_CONTEXT\n"
        " * positions; both functions take a workspace of %s_GEN_WORKSPACE_BYTES and the\n"
        " * parameter blob above. %s_prefill runs the model over a prompt of *n tokens,\n"
        " * 1 <= *n <= %s_CONTEXT, in tokens[0..%s_CONTEXT) (padded with 0), fills the\n"
        " * cache and gives the logits of the token after the prompt (its last row's only);\n"
        " * %s_decode_step then takes the token at position *pos (*n, *n+1, …, below\n"
        " * %s_CONTEXT), reads cache rows 0..*pos-1, writes row *pos, and gives the logits\n"
        " * of the next token. Both return 0, or KILN_FORWARD_INDEX_RANGE for a token id,\n"
        " * length or position outside the model's tables (KILN_FORWARD_NULL_ARG or\n"
        " * KILN_FORWARD_MISALIGNED for a NULL pointer or a blob that is not float-aligned, as\n"
        " * every entry). */\n",
        up, up, up, name, up, up, name, up);
    if (source)
        kiln_header_add(&s, &len,
            "/* An encoder-decoder: %s_prefill also encodes the source — src, its token ids padded\n"
            " * with 0 to %s_SOURCE_LEN, and src_mask, 1 for a token and 0 for padding — once,\n"
            " * and keeps every cross-attention's keys and values in the cache too; the decode\n"
            " * step reads them from there (it never runs the encoder). tokens start with the\n"
            " * model's <bos>. */\n",
            name, up);
    kiln_header_add(&s, &len, "#define %s_CONTEXT %lld\n", up, (long long)context);
    kiln_header_add(&s, &len, "#define %s_VOCAB %lld\n", up, (long long)vocab);
    if (source) kiln_header_add(&s, &len, "#define %s_SOURCE_LEN %lld\n", up, (long long)source);
    kiln_header_add(&s, &len, "#define %s_KV_CACHE_BYTES %lld\n", up, (long long)prefill_plan->optim_bytes);
    kiln_header_add(&s, &len, "#define %s_GEN_WORKSPACE_BYTES %lld\n\n", up, (long long)ws);
    prototype(&s, &len, name, up, prefill, false);
    prototype(&s, &len, name, up, step, true);
    kiln_header_add(&s, &len, "\n");
    return s;
}
