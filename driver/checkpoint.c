/* checkpoint.c — parameter and optimizer blobs ↔ safetensors checkpoints (SPEC section 3).
 *
 * A checkpoint is an ordinary safetensors file: every parameter under its own name, the
 * optimizer state under its STATE node's name (optim.step, optim.m.NAME, optim.v.NAME,
 * optim.momentum.NAME, …), and string metadata (step, data order, tokenizer, classes,
 * the model file; docs/training.md lists the keys). The tensors view the blobs
 * directly, so saving copies nothing, and kiln_tensor_file_write makes it atomic
 * (temporary file, fsync, rename): a crash or kill -9 leaves the previous checkpoint or
 * the new one, never a torn file. Because parameters keep their names, a checkpoint is
 * also a weights file for `kiln run`, `kiln eval` and PyTorch.
 *
 * What exact resume needs besides the blobs is here too: the temporaries a killed save
 * left behind are removed when the next run starts (kiln_atomic_clean, runtime/atomic_file.c), the dims the
 * run was compiled with are recorded ("dims") so that --resume compiles the same step,
 * and a resumed run's --log is cut back to the checkpoint's step, so the steps a killed
 * run logged after its last checkpoint are not there twice (ckpt_log_open).
 * docs/reliability.md lists these promises and the tests that prove them.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "cli.h"
#include "train.h"

/* Tensors viewing blob-resident values (parameters or optimizer state): names and
 * shapes from the nodes, data at blob + offsets[i]. */
static void ckpt_tensors(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const int64_t *offsets, void *blob,
                         kiln_tensor *out)
{
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *node = &g->nodes[nodes[i]];
        out[i] = (kiln_tensor){(char *)node->attrs.name, KILN_F32, node->type.rank, {0}, (char *)blob + offsets[i]};
        memcpy(out[i].shape, node->type.dims, sizeof out[i].shape);
    }
}

/* The kind of an optimizer tensor: "momentum" of optim.momentum.NAME, "step" of optim.step. */
static size_t optim_kind(const char *name, const char **kind)
{
    *kind = name + 6;
    return strcspn(*kind, ".");
}

/* f holds optimizer state of a kind none of the model's state nodes has (SGD's momentum
 * in a checkpoint resumed without momentum, say): the run it continues had other
 * optimizer settings, and that state would be dropped without a word. Names within a
 * kind may differ (a layer frozen since), and are left to ckpt_restore's own checks. */
static bool foreign_optim_state(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const kiln_tensor_file *f,
                                const char *path, kiln_diags *d)
{
    for (int j = 0; j < f->n; j++) {
        const char *name = f->tensors[j].name, *kind, *ours;
        if (strncmp(name, "optim.", 6) != 0) continue;
        size_t len = optim_kind(name, &kind);
        bool kept = false;
        for (uint32_t i = 0; i < n && !kept; i++)
            kept = optim_kind(g->nodes[nodes[i]].attrs.name, &ours) == len && strncmp(ours, kind, len) == 0;
        if (!kept) {
            kiln_diags_add(d, path, 0, 0, name, "is optimizer state the model's optimizer does not keep (it has no "
                           "optim.%.*s of its own): the checkpoint was trained with other optimizer settings, and "
                           "--resume continues a run with its own (to train these weights with the model file's, start "
                           "a new run from them with --init)", (int)len, kind);
            return true;
        }
    }
    return false;
}

bool ckpt_restore(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const int64_t *offsets, void *blob,
                  const kiln_tensor_file *f, const char *path, bool *found, kiln_diags *d)
{
    if (!found && n > 0 && g->nodes[nodes[0]].op == KILN_OP_STATE && foreign_optim_state(g, nodes, n, f, path, d))
        return false;
    /* another model's file: one line, not one per tensor (bind.c) */
    if (!found && n > 0 &&
        bind_missing_summary(g, nodes, n, f, path,
                             g->nodes[nodes[0]].op == KILN_OP_STATE ? "optimizer tensors" : "parameters", d))
        return false;
    bool ok = true;
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *node = &g->nodes[nodes[i]];
        const kiln_tensor *t = kiln_tensor_file_find(f, node->attrs.name);
        if (found) found[i] = t != NULL;
        if (!t) {
            if (!found) {
                kiln_diags_add(d, path, 0, 0, node->attrs.name, "%s missing from the checkpoint",
                               node->op == KILN_OP_STATE ? "optimizer state" : "parameter");
                ok = false;
            }
            continue;
        }
        kiln_type ty = {t->dtype, t->rank, {0}};
        memcpy(ty.dims, t->shape, sizeof ty.dims);
        if (!kiln_type_equal(&ty, &node->type)) {
            char got[160], want[160];
            /* --init (found != NULL) into a changed layer, e.g. a head with another class
             * count: renaming the layer makes --init leave it to fresh initialisation */
            char hint[200] = "";
            const char *dot = strrchr(node->attrs.name, '.');
            if (found && dot && dot > node->attrs.name)
                snprintf(hint, sizeof hint,
                         "; to train this layer afresh, give it a new name in the model file (e.g. \"%.*s_new\"), "
                         "and --init will skip it", (int)(dot - node->attrs.name), node->attrs.name);
            kiln_diags_add(d, path, 0, 0, node->attrs.name, "is %s but the model needs %s%s",
                           kiln_type_str(&ty, got, sizeof got), kiln_type_str(&node->type, want, sizeof want), hint);
            ok = false;
            if (found) found[i] = false;
            continue;
        }
        size_t bytes = (size_t)kiln_type_numel(&node->type) * KILN_ELEM_BYTES;
        if (bytes) memcpy((char *)blob + offsets[i], t->data, bytes);
    }
    return ok;
}

bool ckpt_save(const char *path, const kiln_graph *g, const uint32_t *params, uint32_t n_params,
               const int64_t *param_offsets, void *params_blob, const uint32_t *states, uint32_t n_states,
               const int64_t *state_offsets, void *optim_blob, const char *const *keys, const char *const *values,
               int n_meta, kiln_diags *d)
{
    kiln_tensor *t = calloc((size_t)n_params + n_states + 1, sizeof *t);
    KILN_ASSERT(t != NULL);
    ckpt_tensors(g, params, n_params, param_offsets, params_blob, t);
    ckpt_tensors(g, states, n_states, state_offsets, optim_blob, t + n_params);
    kiln_rt_error err = {{0}};
    bool ok = kiln_tensor_file_write(path, t, (int)(n_params + n_states), keys, values, n_meta, &err) == 0;
    if (!ok) bind_rt_error(d, path, &err);
    free(t);
    return ok;
}

bool ckpt_tokenizer(const kiln_tensor_file *f, const char *path, kiln_tokenizer *t, kiln_diags *d)
{
    const char *text = kiln_tensor_file_meta(f, "tokenizer");
    if (!text) return false;
    return kiln_tokenizer_deserialize(t, text, path, "__metadata__.tokenizer", d);
}

bool ckpt_or_model_tokenizer(const kiln_tensor_file *f, const char *path, kiln_tokenizer_kind kind,
                             const char *command, kiln_tokenizer *t, kiln_diags *d)
{
    if (ckpt_tokenizer(f, path, t, d)) return true;
    if (d->n) return false;
    if (kind == KILN_TOK_NONE || kind == KILN_TOK_BYTE) {
        kiln_tokenizer_init_byte(t);
        return true;
    }
    kiln_diags_add(d, path, 0, 0, NULL,
                   "has no tokenizer in its metadata, and the model's %s tokenizer is learned from the training "
                   "data: %s a checkpoint written by kiln train --save",
                   kind == KILN_TOK_CHAR ? "char" : "bpe", command);
    return false;
}

/* ---- the dims a run was trained with ---------------------------------------------------------- */

char *ckpt_dims_format(const kiln_model *m)
{
    size_t cap = 1;
    for (int i = 0; i < m->n_dims; i++) cap += strlen(m->dims[i].name) + 24;
    char *s = malloc(cap), *p = s;
    KILN_ASSERT(s != NULL);
    *p = 0;
    for (int i = 0; i < m->n_dims; i++)
        p += sprintf(p, "%s%s=%lld", i ? "," : "", m->dims[i].name, (long long)m->dims[i].value);
    return s;
}

int ckpt_dims_parse(char *text, kiln_dim_binding *out, int cap)
{
    int n = 0;
    for (char *item = text; item && *item; n++) {
        char *comma = strchr(item, ','), *eq = strchr(item, '=');
        if (comma) *comma = 0;
        int64_t v;
        if (n == cap || !eq || eq == item || !cli_parse_int(eq + 1, &v) || v < 0) return -1;
        *eq = 0;
        out[n] = (kiln_dim_binding){item, v};
        item = comma ? comma + 1 : NULL;
    }
    return n;
}

/* ---- the metrics log of a resumed run --------------------------------------------------------- */

/* The step a --log line records ({"step": N, … as progress.c writes it}), or −1. */
static int64_t log_line_step(const char *line, size_t len)
{
    static const char key[] = "{\"step\": ";
    if (len < sizeof key || memcmp(line, key, sizeof key - 1) != 0) return -1;
    int64_t v = 0;
    size_t i = sizeof key - 1;
    if (line[i] < '0' || line[i] > '9') return -1;
    for (; i < len && line[i] >= '0' && line[i] <= '9' && v < INT64_MAX / 10 - 9; i++) v = v * 10 + line[i] - '0';
    return v;
}

FILE *ckpt_log_open(const char *path, int64_t resume_step, kiln_diags *d)
{
    if (resume_step < 0) {
        FILE *f = fopen(path, "w");
        if (!f) kiln_diags_add(d, path, 0, 0, "--log", "cannot open the metrics log for writing: %s", strerror(errno));
        return f;
    }
    FILE *f = fopen(path, "a+");
    if (!f) {
        kiln_diags_add(d, path, 0, 0, "--log", "cannot open the metrics log for appending: %s", strerror(errno));
        return NULL;
    }
    /* keep the lines up to the checkpoint's step; cut at the first later step (the
     * killed run went on past its last checkpoint) or at a torn or foreign line */
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    off_t keep = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        int64_t step = line[len - 1] == '\n' ? log_line_step(line, (size_t)len) : -1;
        if (step < 0 || step > resume_step) break;
        keep += len;
    }
    free(line);
    if (fflush(f) != 0 || ftruncate(fileno(f), keep) != 0 || fseeko(f, 0, SEEK_END) != 0) {
        kiln_diags_add(d, path, 0, 0, "--log", "cannot cut the metrics log back to step %lld: %s",
                       (long long)resume_step, strerror(errno));
        fclose(f);
        return NULL;
    }
    return f;
}
