/* header.c — the C header of an exported library (SPEC section 6).
 *
 * Design: the header is plain text built from the request and its memory plan, so it
 * states exactly what the object file was compiled for: the blob and workspace sizes,
 * the parameter count, the prototypes with the model's inputs and outputs in argument
 * order (each commented with its shape), and the status codes. It depends on nothing
 * but <stddef.h> and <stdint.h>. Two rules make several exported models usable in one
 * program: the include guard carries the model's name, and the shared pieces
 * (kiln_param_info and the KILN_LOAD_* codes) sit behind KILN_PARAM_INFO_DEFINED, word
 * for word as in include/kiln/params.h, which the runtime's loader is compiled with.
 *
 * With --train the header adds the training step's sizes and prototype (SPEC section 6):
 * every model input in model order, then `float lr`, then the loss.
 *
 * Argument names come from the model's input and output names, made into C identifiers
 * (other characters become '_'); a name that would clash with a C or C++ keyword, a
 * name of <stddef.h> or <stdint.h>, a common libc macro, one of the header's own macros,
 * `params`/`workspace` or an earlier argument gets a trailing '_'; a name over 60
 * characters is arg<position> (two names cut at 60 could be equal). The _COUNT macros are named after the arguments, made distinct again
 * after upper-casing (inputs `x` and `X`).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"

/* A growing string. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

void kiln_header_add(char **s, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KILN_ASSERT(n >= 0);
    *s = realloc(*s, *len + (size_t)n + 1);
    KILN_ASSERT(*s != NULL);
    va_start(ap, fmt);
    vsnprintf(*s + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KILN_ASSERT(n >= 0);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        KILN_ASSERT(t->s != NULL);
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void kiln_header_upper(const char *s, char *out, size_t size)
{
    size_t i = 0;
    for (; s[i] && i + 1 < size; i++) out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 'a' + 'A' : s[i]);
    out[i] = '\0';
}

/* Names an argument may not take: C and C++ keywords (the header is meant for both),
 * names <stddef.h> and <stdint.h> define or reserve (NULL, offsetof, the types ending in
 * _t, the macros ending in _MAX, _MIN or _C), macros GCC predefines outside strict ISO
 * modes (linux, unix, i386), object-like macros of the standard headers a program
 * usually includes before this one (errno, EOF…), the header's own macros (`up` is the
 * model's upper-case name: UP_PARAMS_BYTES…, and KILN_…), and the entry points' own
 * parameter names. A macro of that name would expand inside the prototype. */
static bool is_reserved(const char *s, const char *up)
{
    static const char *const words[] = {
        /* C17 and C23 */
        "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
        "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
        "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
        "volatile", "while", "bool", "true", "false", "alignas", "alignof", "constexpr", "nullptr",
        "static_assert", "thread_local", "typeof", "typeof_unqual",
        /* C++ */
        "and", "and_eq", "asm", "bitand", "bitor", "catch", "class", "compl", "concept", "const_cast",
        "consteval", "constinit", "co_await", "co_return", "co_yield", "decltype", "delete", "dynamic_cast",
        "explicit", "export", "friend", "mutable", "namespace", "new", "noexcept", "not", "not_eq", "operator",
        "or", "or_eq", "private", "protected", "public", "reinterpret_cast", "requires", "static_cast",
        "template", "this", "throw", "try", "typeid", "typename", "using", "virtual", "xor", "xor_eq",
        /* the headers and the compiler */
        "NULL", "offsetof", "linux", "unix", "i386",
        /* <errno.h>, <stdio.h>, <stdlib.h>, <math.h>, <limits.h>, <time.h>, <complex.h>,
         * <stdnoreturn.h>, <assert.h> */
        "errno", "EDOM", "ERANGE", "EILSEQ", "EOF", "BUFSIZ", "SEEK_SET", "SEEK_CUR", "SEEK_END", "L_tmpnam",
        "stdin", "stdout", "stderr", "EXIT_SUCCESS", "EXIT_FAILURE", "HUGE_VAL", "INFINITY", "NAN", "CHAR_BIT",
        "CLOCKS_PER_SEC", "I", "complex", "imaginary", "noreturn", "NDEBUG",
        /* the entry points' parameters */
        "params", "workspace"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(s, words[i]) == 0) return true;
    size_t n = strlen(s), u = strlen(up);
    if (strncmp(s, "KILN_", 5) == 0 || (strncmp(s, up, u) == 0 && s[u] == '_')) return true;
    if (n >= 2 && strcmp(s + n - 2, "_t") == 0) return true; /* int32_t, size_t, and POSIX's reservation */
    bool lower = false;
    for (const char *p = s; *p; p++) lower |= islower((unsigned char)*p) != 0;
    static const char *const macro_ends[] = {"_MAX", "_MIN", "_C", "_WIDTH"}; /* INT32_MAX, INT64_C, … */
    for (size_t i = 0; i < sizeof macro_ends / sizeof macro_ends[0] && !lower; i++) {
        size_t e = strlen(macro_ends[i]);
        if (n >= e && strcmp(s + n - e, macro_ends[i]) == 0) return true;
    }
    return s[0] == '_'; /* reserved-looking names: keep clear of them */
}

/* Whether s is one of names[0..k). */
static bool among(const char *s, char names[][64], int k)
{
    for (int j = 0; j < k; j++)
        if (strcmp(names[j], s) == 0) return true;
    return false;
}

/* Argument k's name: `name` as a C identifier, distinct from names[0..k) and not
 * reserved (is_reserved; `up` is the model's upper-case name). */
static void arg_name(const char *name, const char *up, char names[][64], int k)
{
    char *out = names[k];
    size_t n = 0;
    if (!isalpha((unsigned char)name[0])) out[n++] = 'x';
    const char *p = name;
    for (; *p && n < 60; p++) out[n++] = isalnum((unsigned char)*p) ? *p : '_';
    out[n] = '\0';
    /* a name cut at 60 characters could equal another cut there: name it by position */
    if (*p) n = (size_t)snprintf(out, 64, "arg%d", k);
    while ((is_reserved(out, up) || among(out, names, k)) && n < 63) {
        out[n++] = '_';
        out[n] = '\0';
    }
    /* 63 characters and still taken: a number, which k earlier names cannot all hold */
    for (int j = 0; is_reserved(out, up) || among(out, names, k); j++) snprintf(out, 64, "arg%d_%d", k, j);
}

/* Macro k's infix: argument name `arg` upper-cased, distinct from macros[0..k). */
static void macro_name(const char *arg, char macros[][64], int k)
{
    kiln_header_upper(arg, macros[k], 63);
    size_t n = strlen(macros[k]);
    while (among(macros[k], macros, k) && n < 63) macros[k][n++] = '_', macros[k][n] = '\0';
    for (int j = 0; among(macros[k], macros, k); j++) snprintf(macros[k], 64, "ARG%d_%d", k, j);
}

static void add_shape(text *t, const kiln_type *ty)
{
    add(t, "%s[", kiln_dtype_name(ty->dtype));
    for (int d = 0; d < ty->rank; d++) add(t, "%s%lld", d ? ", " : "", (long long)ty->dims[d]);
    add(t, "]");
}

/* int NAME_train_step(float *params, float *optim, void *workspace, inputs…, float lr, outputs…);
 * `optim` and `lr` take the first two names so that an input cannot shadow them. */
static void add_train_step(text *t, const kiln_compile_request *req, const char *name, const char *up)
{
    const kiln_graph *g = req->g;
    uint32_t n_args = 2 + req->n_inputs + g->n_outputs;
    char(*names)[64] = calloc(n_args, sizeof *names);
    KILN_ASSERT(names != NULL);
    arg_name("optim", up, names, 0);
    arg_name("lr", up, names, 1);
    for (uint32_t i = 0; i < req->n_inputs; i++) arg_name(g->nodes[req->inputs[i]].attrs.name, up, names, (int)(2 + i));
    for (uint32_t o = 0; o < g->n_outputs; o++)
        arg_name(g->outputs[o].name, up, names, (int)(2 + req->n_inputs + o));
    add(t, "/* One training step: forward, backward and the optimizer update from the model\n"
           " * file, written into params and optim in place. optim is %s_OPTIM_BYTES, zeroed\n"
           " * before the first step (it holds the step counter); the workspace is\n"
           " * %s_TRAIN_WORKSPACE_BYTES; lr is this step's learning rate (the caller owns the\n"
           " * schedule). Returns 0, or KILN_FORWARD_* before anything was updated. */\n",
        up, up);
    add(t, "int %s_train_step(float *params, float *%s, void *workspace", name, names[0]);
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const kiln_node *n = &g->nodes[req->inputs[i]];
        add(t, ",\n        const %s *%s /* ", n->type.dtype == KILN_I32 ? "int32_t" : "float", names[2 + i]);
        add_shape(t, &n->type);
        add(t, " */");
    }
    add(t, ",\n        float %s", names[1]);
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        const kiln_type *ty = &g->nodes[g->outputs[o].node].type;
        add(t, ",\n        %s *%s /* ", ty->dtype == KILN_I32 ? "int32_t" : "float", names[2 + req->n_inputs + o]);
        add_shape(t, ty);
        add(t, " */");
    }
    add(t, ");\n\n");
    free(names);
}

char *kiln_header_text(const kiln_compile_request *req, const kiln_memplan *plan, const kiln_compile_request *train,
                       const kiln_memplan *train_plan, const char *source)
{
    const kiln_graph *g = req->g;
    const char *name = req->name ? req->name : g->name;
    char up[256];
    kiln_header_upper(name, up, sizeof up);
    uint32_t n_args = req->n_inputs + g->n_outputs;
    char(*names)[64] = calloc(n_args ? n_args : 1, sizeof *names);
    KILN_ASSERT(names != NULL);
    for (uint32_t i = 0; i < req->n_inputs; i++) arg_name(g->nodes[req->inputs[i]].attrs.name, up, names, (int)i);
    for (uint32_t o = 0; o < g->n_outputs; o++) arg_name(g->outputs[o].name, up, names, (int)(req->n_inputs + o));

    text t = {0};
    add(&t, "/* The exported model '%s', generated by `kiln compile`. Do not edit.\n", name);
    if (source) {
        /* the path as written, except that a "*" + "/" in it would end this comment */
        add(&t, " * Model file: ");
        for (const char *c = source; *c; c++) add(&t, c[0] == '*' && c[1] == '/' ? "* " : "%c", *c);
        add(&t, "\n");
    }
    add(&t, " *\n"
            " * Memory is the caller's: a parameter blob of %s_PARAMS_BYTES and a workspace of\n"
            " * %s_WORKSPACE_BYTES, from malloc or, a little faster, aligned_alloc(64, …). Fill the blob\n"
            " * with %s_load, or write each parameter at its %s_params[i].offset. No function\n"
            " * allocates or prints; they return 0 on success. One workspace serves one call at a\n"
            " * time; the parameter blob may be shared by concurrent calls.\n"
            " *\n",
        up, up, name, name);
    add(&t, " * Inputs:\n");
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const kiln_node *n = &g->nodes[req->inputs[i]];
        add(&t, " *   %-20s ", n->attrs.name);
        add_shape(&t, &n->type);
        add(&t, "\n");
    }
    add(&t, " * Outputs:\n");
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        add(&t, " *   %-20s ", g->outputs[o].name);
        add_shape(&t, &g->nodes[g->outputs[o].node].type);
        add(&t, "\n");
    }
    add(&t, " */\n#ifndef KILN_EXPORT_%s_H\n#define KILN_EXPORT_%s_H\n\n", up, up);
    add(&t, "#include <stddef.h>\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");

    /* shared by every exported header and by kiln/params.h: keep the three identical */
    add(&t, "#ifndef KILN_PARAM_INFO_DEFINED\n"
            "#define KILN_PARAM_INFO_DEFINED\n"
            "/* One parameter of an exported model: where it lives in the parameter blob. */\n"
            "typedef struct kiln_param_info {\n"
            "    const char *name;   /* the parameter's name, as in weights files (\"blocks.0.attn.q.weight\") */\n"
            "    size_t offset;      /* bytes from the start of the blob (64-byte aligned) */\n"
            "    int rank;\n"
            "    int64_t shape[8];   /* entries past rank are 0 */\n"
            "} kiln_param_info;\n\n"
            "/* What NAME_load returns (0 = success). */\n"
            "enum {\n"
            "    KILN_LOAD_OK = 0,\n"
            "    KILN_LOAD_IO = 1,       /* cannot open or read the file */\n"
            "    KILN_LOAD_FORMAT = 2,   /* not a well-formed safetensors file (or a name twice, or a\n"
            "                               parameter's bytes overlapping another tensor's) */\n"
            "    KILN_LOAD_MISSING = 3,  /* a parameter of the model is not in the file */\n"
            "    KILN_LOAD_SHAPE = 4,    /* a parameter has another shape in the file */\n"
            "    KILN_LOAD_DTYPE = 5,    /* a parameter's dtype is not F32, F16, BF16 or F64 (or an F64\n"
            "                               value does not fit in f32) */\n"
            "    KILN_LOAD_NULL_ARG = 6, /* NAME_load: the blob or the path is NULL */\n"
            "    KILN_LOAD_MISALIGNED = 7 /* NAME_load: the blob is not float-aligned */\n"
            "};\n"
            "#endif\n\n");
    add(&t, "#ifndef KILN_FORWARD_STATUS_DEFINED\n"
            "#define KILN_FORWARD_STATUS_DEFINED\n"
            "/* What NAME_forward and the model's other entry points return (0 = success). Every\n"
            " * entry first checks its pointers: nothing has been read or written when it returns\n"
            " * NULL_ARG or MISALIGNED. */\n"
            "enum {\n"
            "    KILN_FORWARD_OK = 0,\n"
            "    KILN_FORWARD_INDEX_RANGE = %d,   /* an index (token id) outside its table */\n"
            "    KILN_FORWARD_TARGET_RANGE = %d,  /* a cross_entropy target outside the classes */\n"
            "    KILN_FORWARD_NULL_ARG = %d,      /* a NULL blob, workspace, input or output */\n"
            "    KILN_FORWARD_MISALIGNED = %d     /* a blob not float-aligned */\n"
            "};\n"
            "#endif\n\n",
        KILN_RC_INDEX_RANGE, KILN_RC_TARGET_RANGE, KILN_RC_NULL_ARG, KILN_RC_MISALIGNED);

    add(&t, "#define %s_PARAMS_BYTES %lld\n", up, (long long)plan->params_bytes);
    add(&t, "#define %s_WORKSPACE_BYTES %lld\n", up, (long long)plan->workspace_bytes + KILN_WORKSPACE_SLACK);
    add(&t, "#define %s_NUM_PARAMS %u\n", up, req->n_params);
    if (train) {
        add(&t, "#define %s_OPTIM_BYTES %lld  /* the optimizer blob of %s_train_step */\n", up,
            (long long)train_plan->optim_bytes, name);
        add(&t, "#define %s_TRAIN_WORKSPACE_BYTES %lld  /* the workspace of %s_train_step */\n", up,
            (long long)train_plan->workspace_bytes + KILN_WORKSPACE_SLACK, name);
    }
    /* forward inputs first, so that their macros keep their plain names */
    uint32_t n_train = train ? train->n_inputs : 0;
    char(*macros)[64] = calloc(req->n_inputs + n_train + g->n_outputs + 1, sizeof *macros);
    KILN_ASSERT(macros != NULL);
    for (uint32_t i = 0; i < req->n_inputs; i++) macro_name(names[i], macros, (int)i);
    int n_in = (int)req->n_inputs;
    for (uint32_t i = 0; i < n_train; i++) {
        /* inputs only the loss reads (targets) are not the forward entry's: count them too */
        const kiln_node *n = &train->g->nodes[train->inputs[i]];
        bool in_forward = false;
        for (uint32_t j = 0; j < req->n_inputs && !in_forward; j++)
            in_forward = strcmp(g->nodes[req->inputs[j]].attrs.name, n->attrs.name) == 0;
        if (in_forward) continue;
        char one[1][64];
        arg_name(n->attrs.name, up, one, 0);
        macro_name(one[0], macros, n_in);
        add(&t, "#define %s_IN_%s_COUNT %lld  /* elements of input '%s' (training) */\n", up, macros[n_in],
            (long long)kiln_type_numel(&n->type), n->attrs.name);
        n_in++;
    }
    for (uint32_t i = 0; i < req->n_inputs; i++)
        add(&t, "#define %s_IN_%s_COUNT %lld  /* elements of input '%s' */\n", up, macros[i],
            (long long)kiln_type_numel(&g->nodes[req->inputs[i]].type), g->nodes[req->inputs[i]].attrs.name);
    char(*out_macros)[64] = macros + n_in;
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        macro_name(names[req->n_inputs + o], out_macros, (int)o);
        add(&t, "#define %s_OUT_%s_COUNT %lld  /* elements of output '%s' */\n", up, out_macros[o],
            (long long)kiln_type_numel(&g->nodes[g->outputs[o].node].type), g->outputs[o].name);
    }
    free(macros);

    add(&t, "\n/* name, offset and shape of each parameter, in blob order */\n");
    add(&t, "extern const kiln_param_info %s_params[];  /* %s_NUM_PARAMS entries */\n\n", name, up);
    add(&t, "/* One forward pass. Returns 0, or KILN_FORWARD_* (outputs then unspecified). Inputs\n"
            " * and outputs must not overlap each other, the blob or the workspace. */\n");
    add(&t, "int %s_forward(const float *params, void *workspace", name);
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const kiln_node *n = &g->nodes[req->inputs[i]];
        add(&t, ",\n        const %s *%s /* ", n->type.dtype == KILN_I32 ? "int32_t" : "float", names[i]);
        add_shape(&t, &n->type);
        add(&t, " */");
    }
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        const kiln_type *ty = &g->nodes[g->outputs[o].node].type;
        add(&t, ",\n        %s *%s /* ", ty->dtype == KILN_I32 ? "int32_t" : "float", names[req->n_inputs + o]);
        add_shape(&t, ty);
        add(&t, " */");
    }
    add(&t, ");\n\n");
    if (train) add_train_step(&t, train, name, up);
    add(&t, "/* Fills the blob from a safetensors file by parameter name (F32; F16, BF16 and F64\n"
            " * are converted), checking every shape; extra tensors are ignored. Returns 0 or a\n"
            " * KILN_LOAD_* code (the blob is then unspecified). Never allocates. */\n");
    add(&t, "int %s_load(float *params, const char *safetensors_path);\n\n", name);
    add(&t, "/* Sizes the library's thread pool: n threads in all, the caller included (default\n"
            " * 1, at most 8 used). Kernels with enough work are split across them; results are\n"
            " * the same bits for any n. Returns 0, or non-zero for n < 1 (or when a thread cannot\n"
            " * be started: passes then run on the caller). Not during a pass. */\n");
    add(&t, "int %s_set_threads(int n);\n\n", name);
    add(&t, "#ifdef __cplusplus\n}\n#endif\n\n#endif /* KILN_EXPORT_%s_H */\n", up);
    free(names);
    return t.s;
}

/* A check placed before the first of the model's macros: another header that already
 * defines one of them belongs to a model whose name makes the same macro (model `lm`
 * compiled with --train and model `lm_train` both name LM_TRAIN_WORKSPACE_BYTES), and
 * without the check the later definition would silently win, sizing one model's
 * workspace by the other's. The include guard keeps a header included twice from
 * tripping it. */
char *kiln_header_with_clash_check(char *header, const char *name)
{
    char prefix[300];
    kiln_header_upper(name, prefix + strlen("#define "), sizeof prefix - 16);
    memcpy(prefix, "#define ", strlen("#define "));
    strcat(prefix, "_");
    size_t plen = strlen(prefix);
    text check = {0};
    add(&check, "/* Stop if another exported header already defined one of these macros: the two\n"
                " * models' names clash, and one would be sized by the other's numbers. */\n#if 0");
    char *first = NULL;
    for (char *line = header; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, prefix, plen) != 0) continue;
        if (!first) first = line;
        const char *id = line + strlen("#define ");
        size_t n = strcspn(id, " (\n");
        add(&check, " \\\n    || defined(%.*s)", (int)n, id);
    }
    if (!first) {
        free(check.s);
        return header;
    }
    add(&check, "\n#error \"a macro of the exported model '%s' is already defined by another "
                "header: rename one of the two models\"\n#endif\n", name);
    size_t head = (size_t)(first - header), n = strlen(header);
    char *out = malloc(n + check.len + 1);
    KILN_ASSERT(out != NULL);
    memcpy(out, header, head);
    memcpy(out + head, check.s, check.len);
    memcpy(out + head + check.len, header + head, n - head + 1);
    free(check.s);
    free(header);
    return out;
}
