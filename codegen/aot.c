/* aot.c — exported libraries: `kiln compile MODEL.json -o OUT.{so,o,a} [--header OUT.h]`.
 *
 * Design (../shared/DESIGN.md, "LLVM facts measured"):
 *   the forward module exactly as the JIT gets it (kiln_codegen_module: same plan, same
 *   kernels, same passes, so AOT and JIT results are bit-identical on one target)
 *   + the exported library's other symbols, in LLVM IR:
 *       const kiln_param_info NAME_params[]   the parameter table (names, offsets, shapes)
 *       int NAME_load(float *, const char *)  → kiln_params_load(blob, path, table, n, seen)
 *                                               with `seen` on its own stack
 *       int NAME_set_threads(int)             sizes the library's thread pool (threads.c)
 *   → LLVMTargetMachineEmitToFile on a clone (codegen mutates the module it emits), PIC
 *   + with --train, the training step's module (NAME_train_step, its graph built by the
 *     driver) as a second object: its kernels are internal, so the two cannot clash
 *   + with --generate, generation's prefill and decode step (NAME_prefill,
 *     NAME_decode_step: stateful entries over a KV-cache blob) as two more objects, and
 *     their sizes and prototypes in the header (header_generate.c)
 *   + with --train also the split step (NAME_train_grad, NAME_train_apply: gradients into
 *     the split optimizer blob, then the update) as two more objects, with its header part
 *     (header_split.c), for programs that average gradients between the two
 *   → `cc -r -nostdlib` merges the object(s) with the runtime archive's loader
 *     (runtime/params.c: libc only, no allocation), pulling only the members it needs
 *   → `objcopy -G` for each entry point: every other global (the loader included) becomes
 *     local, so two exported models link into one program without clashes and no kiln
 *     symbol leaks
 *   → .o: that object; .a: `ar rcs` of it; .so: `cc -shared -Wl,--no-undefined -lm`, so a
 *     library that would need anything but libc and libm fails to link here, not later.
 *
 * Atomicity: every intermediate and final file is built in a fresh directory beside the
 * output (same file system) and renamed into place only when everything succeeded; the
 * header goes through the runtime's atomic writer (runtime/atomic_file.c), committed last. A failure leaves no
 * trace and never touches an existing output — nor does an LLVM fatal error while an object is
 * emitted: the driver's handler calls kiln_aot_abandon before the process ends. Tools run through posix_spawnp (no shell,
 * so paths need no quoting); their output becomes the diagnostic when they fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <llvm-c/Analysis.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic_file.h"
#include "kiln/params.h"
#include "lower.h"

extern char **environ;

/* ---- the exported module ------------------------------------------------------------- */

static const char *model_name(const kiln_compile_request *req) { return req->name ? req->name : req->g->name; }

/* NAME becomes C symbols and macro prefixes: it must be a C identifier. */
static bool check_name(const char *name, kiln_diags *d)
{
    bool ok = name && (name[0] == '_' || (name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z'));
    for (const char *p = name; ok && *p; p++)
        ok = *p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
    /* "kiln" and "kiln_…" are the runtime's and the header's prefix (kiln_, KILN_): a model
     * named kiln_params would export kiln_params_load, the runtime loader's own name. */
    if (ok && strncmp(name, "kiln", 4) == 0 && (name[4] == '\0' || name[4] == '_')) {
        kiln_diags_add(d, NULL, 0, 0, "name",
                       "'%s' is reserved: 'kiln' and names starting with 'kiln_' are kiln's own symbols "
                       "(kiln_params_load, KILN_LOAD_IO, …); rename the model",
                       name);
        return false;
    }
    if (ok && strlen(name) < 200) return true;
    kiln_diags_add(d, NULL, 0, 0, "name",
                   "'%s' is not a C identifier (letters, digits, '_'; not starting with a digit; under 200 "
                   "characters): the exported symbols are NAME_forward, NAME_load, …",
                   name ? name : "");
    return false;
}

static LLVMValueRef add_function(kiln_cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n)
{
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(ret, params, n, 0));
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(cg->ctx, nounwind, 0));
    kiln_target_tag_function(cg->target, fn);
    return fn;
}

/* const kiln_param_info NAME_params[] = {{"wte.weight", 0, 2, {256, 384}}, …}; the
 * struct's layout is C's on the target: {ptr, size_t, int, [8 x i64]}. */
static void add_param_table(kiln_cg *cg, const kiln_compile_request *req, const kiln_program *prog,
                            const char *prefix)
{
    LLVMTypeRef t_size = LLVMIntPtrTypeInContext(cg->ctx, LLVMGetModuleDataLayout(cg->mod));
    LLVMTypeRef fields[4] = {cg->t_ptr, t_size, cg->t_i32, LLVMArrayType2(cg->t_i64, KILN_MAX_RANK)};
    LLVMTypeRef info_t = LLVMStructTypeInContext(cg->ctx, fields, 4, 0);
    LLVMValueRef *rows = calloc(req->n_params ? req->n_params : 1, sizeof *rows);
    KILN_ASSERT(rows != NULL);
    for (uint32_t i = 0; i < req->n_params; i++) {
        const kiln_node *n = &req->g->nodes[req->params[i]];
        const char *pname = n->attrs.name;
        LLVMValueRef str = LLVMConstStringInContext2(cg->ctx, pname, strlen(pname), 0); /* with its NUL */
        LLVMValueRef gs = LLVMAddGlobal(cg->mod, LLVMTypeOf(str), "param_name");
        LLVMSetInitializer(gs, str);
        LLVMSetGlobalConstant(gs, 1);
        LLVMSetLinkage(gs, LLVMPrivateLinkage);
        LLVMSetUnnamedAddress(gs, LLVMGlobalUnnamedAddr);
        LLVMValueRef dims[KILN_MAX_RANK];
        for (int d = 0; d < KILN_MAX_RANK; d++) dims[d] = cg_i64(cg, d < n->type.rank ? n->type.dims[d] : 0);
        int64_t offset = prog->plan.homes[prog->params[i]].offset;
        LLVMValueRef vals[4] = {gs, LLVMConstInt(t_size, (unsigned long long)offset, 0), cg_i32(cg, n->type.rank),
                                LLVMConstArray2(cg->t_i64, dims, KILN_MAX_RANK)};
        rows[i] = LLVMConstStructInContext(cg->ctx, vals, 4, 0);
    }
    LLVMValueRef table = LLVMConstArray2(info_t, rows, req->n_params);
    char sym[256];
    snprintf(sym, sizeof sym, "%s_params", prefix);
    LLVMValueRef gv = LLVMAddGlobal(cg->mod, LLVMTypeOf(table), sym);
    LLVMSetInitializer(gv, table);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetAlignment(gv, 16);
    free(rows);
}

/* int NAME_load(float *params, const char *path)
 *   { if (!path || (!params && BYTES)) return KILN_LOAD_NULL_ARG;
 *     if ((uintptr_t)params % 4 && BYTES) return KILN_LOAD_MISALIGNED;
 *     unsigned char seen[N]; return kiln_params_load(params, path, NAME_params, N, seen); }
 * (a float's alignment, as every entry asks of the blob; a model without parameters has
 * a blob of 0 bytes, which may be anything but NULL, since kiln_params_load refuses that) */
static void add_load(kiln_cg *cg, const kiln_compile_request *req, int64_t params_bytes, const char *prefix)
{
    LLVMTypeRef lp[5] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_i32, cg->t_ptr};
    LLVMTypeRef loader_t = LLVMFunctionType(cg->t_i32, lp, 5, 0);
    LLVMValueRef loader = LLVMAddFunction(cg->mod, "kiln_params_load", loader_t);
    char sym[256];
    snprintf(sym, sizeof sym, "%s_load", prefix);
    LLVMValueRef fn = add_function(cg, sym, cg->t_i32, lp, 2);
    LLVMSetValueName2(LLVMGetParam(fn, 0), "params", 6);
    LLVMSetValueName2(LLVMGetParam(fn, 1), "path", 4);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMValueRef params = LLVMGetParam(fn, 0), path = LLVMGetParam(fn, 1);
    cg_return_if(cg, LLVMBuildOr(cg->b, LLVMBuildIsNull(cg->b, params, ""), LLVMBuildIsNull(cg->b, path, ""), ""),
                 KILN_LOAD_NULL_ARG);
    if (params_bytes > 0) {
        LLVMValueRef low =
            LLVMBuildAnd(cg->b, LLVMBuildPtrToInt(cg->b, params, cg->t_i64, ""), cg_i64(cg, KILN_ELEM_BYTES - 1), "");
        cg_return_if(cg, LLVMBuildICmp(cg->b, LLVMIntNE, low, cg_i64(cg, 0), ""), KILN_LOAD_MISALIGNED);
    }
    uint32_t n = req->n_params;
    LLVMValueRef seen = LLVMBuildAlloca(cg->b, LLVMArrayType2(LLVMInt8TypeInContext(cg->ctx), n ? n : 1), "seen");
    snprintf(sym, sizeof sym, "%s_params", prefix);
    LLVMValueRef args[5] = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetNamedGlobal(cg->mod, sym),
                            cg_i32(cg, (int32_t)n), seen};
    LLVMBuildRet(cg->b, LLVMBuildCall2(cg->b, loader_t, loader, args, 5, ""));
}

/* int NAME_set_threads(int n) { return kiln_threads_set(n); }
 * The pool is the runtime archive's (threads.c), linked in and made local to the library
 * like the loader, so each exported library has its own. */
static void add_set_threads(kiln_cg *cg, const char *prefix)
{
    LLVMTypeRef set_t = LLVMFunctionType(cg->t_i32, &cg->t_i32, 1, 0);
    LLVMValueRef set = LLVMGetNamedFunction(cg->mod, "kiln_threads_set");
    if (!set) set = LLVMAddFunction(cg->mod, "kiln_threads_set", set_t);
    char sym[256];
    snprintf(sym, sizeof sym, "%s_set_threads", prefix);
    LLVMValueRef fn = add_function(cg, sym, cg->t_i32, &cg->t_i32, 1);
    LLVMValueRef n = LLVMGetParam(fn, 0);
    LLVMSetValueName2(n, "n", 1);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMBuildRet(cg->b, LLVMBuildCall2(cg->b, set_t, set, &n, 1, ""));
}

static bool export_module(const kiln_compile_request *req, kiln_module *m, kiln_diags *d)
{
    if (!check_name(model_name(req), d)) return false;
    /* the library is built around the forward entry; a training step rides along as
     * kiln_aot_options.train (train_module) */
    KILN_ASSERT(!req->train);
    if (!kiln_codegen_module(req, m, d)) return false;
    const char *prefix = model_name(req);
    add_param_table(&m->cg, req, &m->prog, prefix);
    add_load(&m->cg, req, m->prog.plan.params_bytes, prefix);
    add_set_threads(&m->cg, prefix);
    char *msg = NULL;
    if (LLVMVerifyModule(m->cg.mod, LLVMReturnStatusAction, &msg)) {
        kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: the exported module is invalid: %s", msg ? msg : "?");
        LLVMDisposeMessage(msg);
        kiln_module_free(m);
        return false;
    }
    LLVMDisposeMessage(msg);
    return true;
}

char *kiln_aot_emit(const kiln_compile_request *req, bool assembly, kiln_diags *d)
{
    kiln_module m;
    if (!export_module(req, &m, d)) return NULL;
    char *text = kiln_cg_text(&m.cg, assembly, d);
    kiln_module_free(&m);
    return text;
}

/* ---- files and tools ----------------------------------------------------------------- */

/* malloc'd "a/b" from a and b. */
static char *join(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *s = malloc(n);
    KILN_ASSERT(s != NULL);
    snprintf(s, n, "%s/%s", dir, file);
    return s;
}

/* malloc'd directory part of path ("." when there is none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        char *s = strdup(".");
        KILN_ASSERT(s != NULL);
        return s;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *s = malloc(n + 1);
    KILN_ASSERT(s != NULL);
    memcpy(s, path, n);
    s[n] = '\0';
    return s;
}

static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Through the runtime's one atomic writer (runtime/atomic_file.c): temporary beside
 * path, fsync, rename, fsync of the directory; its message becomes the diagnostic. */
static const char *without_path(const char *msg, const char *path)
{
    size_t n = strlen(path);
    return strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

bool kiln_write_file_atomic(const char *path, const void *data, size_t size, kiln_diags *d)
{
    kiln_rt_error err;
    if (kiln_atomic_write_file(path, data, size, &err) == 0) return true;
    kiln_diags_add(d, path, 0, 0, NULL, "cannot write: %s", without_path(err.msg, path));
    return false;
}

/* Runs argv (searched in PATH) with stdin from /dev/null and stdout+stderr captured;
 * a failure to start or a non-zero exit is a diagnostic quoting the command and the
 * start of its output. */
static bool run_tool(char *const argv[], kiln_diags *d)
{
    char cmd[1024];
    size_t len = 0;
    for (int i = 0; argv[i] && len < sizeof cmd; i++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len, "%s%s", i ? " " : "", argv[i]);

    int fds[2];
    if (pipe(fds) != 0) {
        kiln_diags_add(d, NULL, 0, 0, argv[0], "cannot run `%s`: %s", cmd, strerror(errno));
        return false;
    }
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        kiln_diags_add(d, NULL, 0, 0, argv[0], "cannot run `%s`: %s", cmd, strerror(rc));
        return false;
    }
    char out[1536];
    size_t n = 0;
    for (;;) { /* read to the end (the tool may block on a full pipe), keep the start */
        char buf[4096];
        ssize_t k = read(fds[0], buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        size_t keep = (size_t)k < sizeof out - 1 - n ? (size_t)k : sizeof out - 1 - n;
        memcpy(out + n, buf, keep);
        n += keep;
    }
    close(fds[0]);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            status = -1;
            break;
        }
    if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    if (status != -1 && WIFEXITED(status))
        kiln_diags_add(d, NULL, 0, 0, argv[0], "`%s` failed (exit %d)%s%s", cmd, WEXITSTATUS(status),
                       n ? ":\n" : "", out);
    else
        kiln_diags_add(d, NULL, 0, 0, argv[0], "`%s` was killed%s%s", cmd, n ? ":\n" : "", out);
    return false;
}

/* Emits the module (a clone: codegen mutates it) as an object file. */
static bool emit_object(kiln_module *m, const char *path, kiln_diags *d)
{
    LLVMModuleRef clone = LLVMCloneModule(m->cg.mod);
    char *err = NULL;
    bool failed = LLVMTargetMachineEmitToFile(m->cg.target->tm, clone, (char *)path, LLVMObjectFile, &err);
    if (failed) kiln_diags_add(d, path, 0, 0, "codegen", "object emission failed: %s", err ? err : "?");
    LLVMDisposeMessage(err);
    LLVMDisposeModule(clone);
    return !failed;
}

/* The training step's module beside the forward one: both index the caller's one
 * parameter blob, so their plans must place every parameter alike (the memory planner
 * lays parameters out in request order, whatever the graph; this checks it). */
static bool train_module(const kiln_compile_request *req, const kiln_compile_request *train,
                         const kiln_module *fwd, kiln_module *m, kiln_diags *d)
{
    if (!kiln_codegen_module(train, m, d)) return false;
    bool same = train->n_params == req->n_params && m->prog.plan.params_bytes == fwd->prog.plan.params_bytes;
    for (uint32_t i = 0; same && i < req->n_params; i++)
        same = m->prog.plan.homes[m->prog.params[i]].offset == fwd->prog.plan.homes[fwd->prog.params[i]].offset;
    if (same) return true;
    kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: the %s lays out the parameter blob unlike the forward pass",
                   train->stateful ? "generation entry" : "training step");
    kiln_module_free(m);
    return false;
}

/* Generation's prefill and decode step beside the forward module: the parameter blob as
 * the forward pass lays it out (train_module's check), and one KV cache both lay out alike. */
static bool generate_modules(const kiln_compile_request *req, const kiln_aot_options *opt, const kiln_module *fwd,
                             kiln_module *pm, kiln_module *sm, kiln_diags *d)
{
    if (!train_module(req, opt->prefill, fwd, pm, d)) return false;
    if (!train_module(req, opt->decode_step, fwd, sm, d)) {
        kiln_module_free(pm);
        return false;
    }
    const kiln_compile_request *p = opt->prefill, *s = opt->decode_step;
    bool same = p->n_states == s->n_states && pm->prog.plan.optim_bytes == sm->prog.plan.optim_bytes &&
                pm->prog.n_states == p->n_states && sm->prog.n_states == s->n_states;
    /* the plans' ids are the programs' graphs' (simplify rebuilds them): their translated states */
    for (uint32_t i = 0; same && i < p->n_states; i++)
        same = pm->prog.plan.homes[pm->prog.states[i]].offset == sm->prog.plan.homes[sm->prog.states[i]].offset;
    if (same) return true;
    kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: the prefill and the decode step lay out the KV cache differently");
    kiln_module_free(pm);
    kiln_module_free(sm);
    return false;
}

/* The split training step's two modules (NAME_train_grad, NAME_train_apply): the forward
 * pass's parameter blob (train_module's check), and one split optimizer blob both lay
 * out alike over the gradient entry's states (a prefix of the update's, in the same order). */
static bool split_modules(const kiln_compile_request *req, const kiln_aot_options *opt, const kiln_module *fwd,
                          kiln_module *gm, kiln_module *am, kiln_diags *d)
{
    if (!train_module(req, opt->train_grad, fwd, gm, d)) return false;
    if (!train_module(req, opt->train_apply, fwd, am, d)) {
        kiln_module_free(gm);
        return false;
    }
    const kiln_compile_request *g = opt->train_grad, *a = opt->train_apply;
    bool same = g->n_states <= a->n_states && gm->prog.plan.optim_bytes == am->prog.plan.optim_bytes &&
                gm->prog.n_states == g->n_states && am->prog.n_states == a->n_states;
    for (uint32_t i = 0; same && i < g->n_states; i++)
        same = gm->prog.plan.homes[gm->prog.states[i]].offset == am->prog.plan.homes[am->prog.states[i]].offset;
    if (same) return true;
    kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: the gradient and update entries lay out the optimizer blob differently");
    kiln_module_free(gm);
    kiln_module_free(am);
    return false;
}

/* Where the split optimizer blob's gradient area starts (bytes). */
static int64_t split_grad_offset(const kiln_aot_options *opt, const kiln_module *am)
{
    if (opt->first_grad >= opt->train_apply->n_states) return am->prog.plan.optim_bytes;
    return am->prog.plan.homes[am->prog.states[opt->first_grad]].offset;
}

/* The gradients of the split step for its header: where each is, and the order the
 * gradient entry announces them (by ready position, then number: entry.c's order). */
static void split_grads(const kiln_aot_options *opt, const kiln_module *gm, const kiln_module *am, kiln_split_grads *out)
{
    const kiln_compile_request *g = opt->train_grad;
    uint32_t n = g->n_ready;
    out->n = n;
    out->offsets = calloc(n + 1, sizeof *out->offsets);
    out->floats = calloc(n + 1, sizeof *out->floats);
    out->order = calloc(n + 1, sizeof *out->order);
    KILN_ASSERT(out->offsets && out->floats && out->order);
    for (uint32_t i = 0; i < n; i++) {
        const kiln_home *h = &am->prog.plan.homes[am->prog.states[g->ready_first + i]];
        out->offsets[i] = h->offset;
        out->floats[i] = h->bytes / 4;
        out->order[i] = i;
    }
    for (uint32_t i = 1; i < n; i++) /* stable: ties keep the numbers' order */
        for (uint32_t c = i; c > 0 && gm->ready_after[out->order[c - 1]] > gm->ready_after[out->order[c]]; c--) {
            int64_t t = out->order[c];
            out->order[c] = out->order[c - 1], out->order[c - 1] = t;
        }
}

/* The header text with a part (generation's, the split step's) placed before its closing lines. */
static char *header_with_part(char *text, char *gen)
{
    const char *tail = "#ifdef __cplusplus\n}\n#endif";
    char *at = NULL;
    for (char *p = strstr(text, tail); p; p = strstr(p + 1, tail)) at = p; /* the last one */
    KILN_ASSERT(at != NULL);
    size_t head = (size_t)(at - text), n = strlen(text), g = strlen(gen);
    char *out = malloc(n + g + 1);
    KILN_ASSERT(out != NULL);
    memcpy(out, text, head);
    memcpy(out + head, gen, g);
    memcpy(out + head + g, text + head, n - head + 1);
    free(gen);
    free(text);
    return out;
}

static char *header_with_generate(char *text, const kiln_aot_options *opt, const kiln_module *pm, const kiln_module *sm)
{
    return header_with_part(text, kiln_header_generate_text(opt->prefill, &pm->prog.plan, opt->decode_step,
                                                            &sm->prog.plan));
}

/* The files of one build, all inside `dir` (a fresh directory beside the output). */
typedef struct build {
    char *dir, *model_o, *train_o, *prefill_o, *step_o, *grad_o, *apply_o, *merged_o, *final;
    char *old_out;           /* a hard link to the existing -o, to put back if the header fails */
    kiln_atomic_file header; /* written beside the header, committed last */
} build;

/* The build kiln_aot_write is running on this thread, for kiln_aot_abandon. */
static _Thread_local const build *building;

static void build_remove(const build *b)
{
    const char *files[] = {b->model_o, b->train_o, b->prefill_o, b->step_o,
                           b->grad_o,  b->apply_o, b->merged_o,  b->final, b->old_out};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (files[i]) unlink(files[i]); /* renamed ones are gone already: harmless */
    if (b->dir) rmdir(b->dir);
}

void kiln_aot_abandon(void)
{
    if (building) build_remove(building);
    building = NULL;
}

static void build_cleanup(build *b)
{
    building = NULL;
    build_remove(b);
    free(b->dir);
    free(b->model_o);
    free(b->train_o);
    free(b->prefill_o);
    free(b->step_o);
    free(b->grad_o);
    free(b->apply_o);
    free(b->merged_o);
    free(b->final);
    free(b->old_out);
    kiln_atomic_abort(&b->header); /* a no-op once committed */
}

/* Writes the header to a temporary beside `path`, committed after the library. */
static bool stage_header(build *b, const char *path, const char *text, kiln_diags *d)
{
    kiln_rt_error err;
    if (kiln_atomic_begin(&b->header, path, &err) || kiln_atomic_write(&b->header, text, strlen(text), &err)) {
        kiln_diags_add(d, path, 0, 0, NULL, "cannot write: %s", without_path(err.msg, path));
        return false;
    }
    return true;
}

/* Renames the library and the header into place, both or neither: two renames cannot
 * be one atomic step, so the header's bytes are synced first (only its rename is left
 * to fail), the existing library is kept as a hard link in the build directory, and if
 * the header's rename fails (its path is a directory, a sticky directory's EPERM…) that
 * link is renamed back (or the new library removed when there was none). */
static bool commit_outputs(build *b, const kiln_aot_options *opt, kiln_diags *d)
{
    kiln_rt_error err;
    if (opt->header && kiln_atomic_flush(&b->header, &err)) {
        kiln_diags_add(d, opt->header, 0, 0, NULL, "cannot write: %s", without_path(err.msg, opt->header));
        return false;
    }
    bool had_old = false;
    if (opt->header) {
        b->old_out = join(b->dir, "old");
        had_old = link(opt->out, b->old_out) == 0;
        if (!had_old && errno != ENOENT) {
            kiln_diags_add(d, opt->out, 0, 0, NULL, "cannot keep the existing file while the header is written: %s",
                           strerror(errno));
            return false;
        }
    }
    if (rename(b->final, opt->out) != 0) {
        kiln_diags_add(d, opt->out, 0, 0, NULL, "cannot write: %s", strerror(errno));
        return false;
    }
    if (opt->header && kiln_atomic_commit(&b->header, &err)) {
        kiln_diags_add(d, opt->header, 0, 0, NULL, "cannot write: %s", without_path(err.msg, opt->header));
        if (had_old ? rename(b->old_out, opt->out) != 0 : unlink(opt->out) != 0)
            kiln_diags_add(d, opt->out, 0, 0, NULL, "could not be put back as it was: %s", strerror(errno));
        return false;
    }
    return true;
}

bool kiln_aot_write(const kiln_compile_request *req, const kiln_aot_options *opt, kiln_diags *d)
{
    const char *name = model_name(req);
    kiln_module m, tm, pm, sm, gm, am;
    bool gen = opt->prefill && opt->decode_step, split = opt->train_grad && opt->train_apply;
    if (!export_module(req, &m, d)) return false;
    if (opt->train && !train_module(req, opt->train, &m, &tm, d)) {
        kiln_module_free(&m);
        return false;
    }
    if (gen && !generate_modules(req, opt, &m, &pm, &sm, d)) {
        kiln_module_free(&m);
        if (opt->train) kiln_module_free(&tm);
        return false;
    }
    if (split && !split_modules(req, opt, &m, &gm, &am, d)) {
        kiln_module_free(&m);
        if (opt->train) kiln_module_free(&tm);
        if (gen) kiln_module_free(&pm), kiln_module_free(&sm);
        return false;
    }

    build b = {0};
    b.header.fd = -1;
    char *dir = dir_of(opt->out);
    b.dir = join(dir, ".kiln-XXXXXX");
    free(dir);
    bool ok = mkdtemp(b.dir) != NULL;
    if (ok) building = &b;
    if (!ok) {
        kiln_diags_add(d, opt->out, 0, 0, NULL, "cannot write (creating a temporary directory beside it failed): %s",
                       strerror(errno));
        free(b.dir);
        b.dir = NULL;
    }
    char file[300];
    if (ok) {
        snprintf(file, sizeof file, "%s.model.o", name);
        b.model_o = join(b.dir, file);
        snprintf(file, sizeof file, "%s.o", name);
        b.merged_o = join(b.dir, file);
        ok = emit_object(&m, b.model_o, d);
        if (ok && opt->train) {
            snprintf(file, sizeof file, "%s.train.o", name);
            b.train_o = join(b.dir, file);
            ok = emit_object(&tm, b.train_o, d);
        }
        if (ok && gen) {
            snprintf(file, sizeof file, "%s.prefill.o", name);
            b.prefill_o = join(b.dir, file);
            snprintf(file, sizeof file, "%s.decode_step.o", name);
            b.step_o = join(b.dir, file);
            ok = emit_object(&pm, b.prefill_o, d) && emit_object(&sm, b.step_o, d);
        }
        if (ok && split) {
            snprintf(file, sizeof file, "%s.train_grad.o", name);
            b.grad_o = join(b.dir, file);
            snprintf(file, sizeof file, "%s.train_apply.o", name);
            b.apply_o = join(b.dir, file);
            ok = emit_object(&gm, b.grad_o, d) && emit_object(&am, b.apply_o, d);
        }
    }
    if (ok) {
        char *merge[14];
        int k = 0;
        merge[k++] = (char *)opt->cc, merge[k++] = "-r", merge[k++] = "-nostdlib", merge[k++] = "-o";
        merge[k++] = b.merged_o, merge[k++] = b.model_o;
        if (b.train_o) merge[k++] = b.train_o;
        if (b.prefill_o) merge[k++] = b.prefill_o, merge[k++] = b.step_o;
        if (b.grad_o) merge[k++] = b.grad_o, merge[k++] = b.apply_o;
        merge[k++] = (char *)opt->runtime_archive;
        merge[k] = NULL;
        ok = run_tool(merge, d);
    }
    if (ok) {
        /* -G SYM keeps SYM global and makes every other defined symbol local; entries
         * absent from this build (train_step, prefill, decode_step) are harmless */
        char syms[9][300], *localise[] = {(char *)opt->objcopy, "-G", syms[0], "-G", syms[1], "-G", syms[2], "-G",
                                           syms[3], "-G", syms[4], "-G", syms[5], "-G", syms[6], "-G", syms[7],
                                           "-G", syms[8], b.merged_o, NULL};
        snprintf(syms[0], sizeof syms[0], "%s_forward", name);
        snprintf(syms[1], sizeof syms[1], "%s_load", name);
        snprintf(syms[2], sizeof syms[2], "%s_set_threads", name);
        snprintf(syms[3], sizeof syms[3], "%s_params", name);
        snprintf(syms[4], sizeof syms[4], "%s_train_step", name);
        snprintf(syms[5], sizeof syms[5], "%s_prefill", name);
        snprintf(syms[6], sizeof syms[6], "%s_decode_step", name);
        snprintf(syms[7], sizeof syms[7], "%s_train_grad", name);
        snprintf(syms[8], sizeof syms[8], "%s_train_apply", name);
        ok = run_tool(localise, d);
    }
    if (ok) {
        switch (opt->kind) {
        case KILN_ARTIFACT_OBJECT:
            b.final = strdup(b.merged_o);
            KILN_ASSERT(b.final != NULL);
            break;
        case KILN_ARTIFACT_ARCHIVE: {
            b.final = join(b.dir, "out.a");
            char *archive[] = {(char *)opt->ar, "rcs", b.final, b.merged_o, NULL};
            ok = run_tool(archive, d);
            break;
        }
        case KILN_ARTIFACT_SO: {
            b.final = join(b.dir, "out.so");
            char soname[300];
            snprintf(soname, sizeof soname, "-Wl,-soname,%s", base_of(opt->out));
            char *link[] = {(char *)opt->cc, "-shared", "-o", b.final, b.merged_o, soname, "-Wl,--no-undefined",
                            "-lm", NULL};
            ok = run_tool(link, d);
            break;
        }
        }
    }
    if (ok && opt->header) {
        char *text = kiln_header_text(req, &m.prog.plan, opt->train, opt->train ? &tm.prog.plan : NULL, opt->source);
        if (gen) text = header_with_generate(text, opt, &pm, &sm);
        if (split) {
            kiln_split_grads sg;
            split_grads(opt, &gm, &am, &sg);
            text = header_with_part(text, kiln_header_split_text(opt->train_grad, &gm.prog.plan, opt->train_apply,
                                                                 &am.prog.plan, split_grad_offset(opt, &am), &sg));
            free(sg.offsets), free(sg.floats), free(sg.order);
        }
        text = kiln_header_with_clash_check(text, req->name ? req->name : req->g->name);
        ok = stage_header(&b, opt->header, text, d);
        free(text);
    }
    ok = ok && commit_outputs(&b, opt, d);
    build_cleanup(&b);
    kiln_module_free(&m);
    if (opt->train) kiln_module_free(&tm);
    if (gen) {
        kiln_module_free(&pm);
        kiln_module_free(&sm);
    }
    if (split) {
        kiln_module_free(&gm);
        kiln_module_free(&am);
    }
    return ok;
}
