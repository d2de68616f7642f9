/* deploy.c — using a model exported by `kiln compile` from a plain C program.
 *
 * Built against the header and the library `kiln compile examples/char_gpt.json
 * -o libchar_gpt.so --header char_gpt.h` writes (or the .a / .o), with nothing else: no
 * kiln, no LLVM. It loads the weights with char_gpt_load, runs one forward pass on the
 * bytes of a fixed text (the model's tokenizer is bytes: token = byte value), and prints
 * every logit with %.9g, one per line — enough digits to give each f32 back exactly, so
 * the output can be compared bit for bit with `kiln run`'s.
 *
 *     deploy WEIGHTS.safetensors [TEXT]
 *
 * The memory is ours: one 64-byte aligned block for the parameters, one for the
 * workspace, sized by the header's macros; the library allocates nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "char_gpt.h"

static const char *load_error(int rc)
{
    switch (rc) {
    case KILN_LOAD_IO: return "cannot open or read the file";
    case KILN_LOAD_FORMAT: return "not a well-formed safetensors file";
    case KILN_LOAD_MISSING: return "a parameter is missing";
    case KILN_LOAD_SHAPE: return "a parameter has the wrong shape";
    case KILN_LOAD_DTYPE: return "a parameter has an unsupported dtype";
    }
    return "unknown error";
}

/* aligned_alloc wants a size that is a multiple of the alignment */
static void *alloc64(size_t size) { return aligned_alloc(64, (size + 63) / 64 * 64); }

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors [TEXT]\n", argv[0]);
        return 2;
    }
    const char *text = argc == 3 ? argv[2] : "hello, kiln world";

    float *params = alloc64(CHAR_GPT_PARAMS_BYTES);
    void *workspace = alloc64(CHAR_GPT_WORKSPACE_BYTES);
    int32_t tokens[CHAR_GPT_IN_TOKENS_COUNT];
    static float logits[CHAR_GPT_OUT_LOGITS_COUNT];
    if (!params || !workspace) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    int rc = char_gpt_load(params, argv[1]);
    if (rc != KILN_LOAD_OK) {
        fprintf(stderr, "%s: %s (code %d)\n", argv[1], load_error(rc), rc);
        return 1;
    }
    if (char_gpt_set_threads(1) != 0) return 1;

    /* the text's bytes, repeated to fill every position of every row */
    size_t len = strlen(text);
    for (size_t i = 0; i < CHAR_GPT_IN_TOKENS_COUNT; i++) tokens[i] = len ? (unsigned char)text[i % len] : 0;

    rc = char_gpt_forward(params, workspace, tokens, logits);
    if (rc != KILN_FORWARD_OK) {
        fprintf(stderr, "forward failed (code %d)\n", rc);
        return 1;
    }
    for (size_t i = 0; i < CHAR_GPT_OUT_LOGITS_COUNT; i++) printf("%.9g\n", logits[i]);
    free(params);
    free(workspace);
    return 0;
}
