/* bind.c — connects tensor files to a model's graph: parameters and inputs by name,
 * with every shape and dtype checked against the graph's static types before anything
 * runs. Problems are reported all at once, naming the file and the tensor. */
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "kiln/rng.h"
#include "passes.h"

void bind_rt_error(kiln_diags *diags, const char *path, const kiln_rt_error *err)
{
    const char *msg = err->msg;
    size_t n = strlen(path);
    if (strncmp(msg, path, n) != 0 || strncmp(msg + n, ": ", 2) != 0) {
        kiln_diags_add(diags, path[0] ? path : NULL, 0, 0, NULL, "%s", msg); /* not the usual form: keep it whole */
        return;
    }
    msg += n + 2;
    const char *prefix = "tensor '", *end;
    size_t p = strlen(prefix);
    if (strncmp(msg, prefix, p) == 0 && (end = strstr(msg + p, "': ")) != NULL) {
        char name[sizeof err->msg];
        size_t len = (size_t)(end - (msg + p));
        memcpy(name, msg + p, len);
        name[len] = 0;
        kiln_diags_add(diags, path, 0, 0, name, "%s", end + 3);
        return;
    }
    kiln_diags_add(diags, path, 0, 0, NULL, "%s", msg);
}

kiln_given_input *bind_given_inputs(const kiln_tensor_file *f, int *n)
{
    kiln_given_input *g = calloc(f->n ? (size_t)f->n : 1, sizeof *g);
    KILN_ASSERT(g != NULL);
    for (int i = 0; i < f->n; i++) {
        g[i].name = f->tensors[i].name;
        g[i].rank = f->tensors[i].rank;
        memcpy(g[i].dims, f->tensors[i].shape, sizeof g[i].dims);
    }
    *n = f->n;
    return g;
}

void bind_needed(const kiln_graph *g, bool with_loss, unsigned char *needed)
{
    kiln_graph_live(g, with_loss ? KILN_LIVE_LOSS : 0, needed);
}

static const char *shape_str(const kiln_tensor *t, char *buf, size_t size)
{
    kiln_type ty = {t->dtype, t->rank, {0}};
    memcpy(ty.dims, t->shape, sizeof ty.dims);
    return kiln_type_str(&ty, buf, size);
}

/* Checks one tensor against the node it feeds. */
static bool check_tensor(const kiln_tensor *t, const kiln_node *n, const char *file, const char *what,
                         kiln_diags *d)
{
    kiln_type ty = {t->dtype, t->rank, {0}};
    memcpy(ty.dims, t->shape, sizeof ty.dims);
    if (kiln_type_equal(&ty, &n->type)) return true;
    char got[160], want[160];
    kiln_diags_add(d, file, 0, 0, t->name, "%s is %s but the model needs %s", what, shape_str(t, got, sizeof got),
                   kiln_type_str(&n->type, want, sizeof want));
    return false;
}

bool bind_params(const kiln_model *m, const kiln_tensor_file *f, const char *file, void **values,
                 kiln_diags *diags)
{
    bool ok = true;
    for (int i = 0; i < m->n_params; i++) {
        const kiln_node *n = &m->graph.nodes[m->params[i]];
        const kiln_tensor *t = kiln_tensor_file_find(f, n->attrs.name);
        if (!t) {
            kiln_diags_add(diags, file, 0, 0, n->attrs.name, "parameter missing from the weights file");
            ok = false;
            continue;
        }
        if (!check_tensor(t, n, file, "parameter", diags)) {
            ok = false;
            continue;
        }
        values[m->params[i]] = t->data;
    }
    return ok;
}

bool bind_inputs(const kiln_model *m, const kiln_tensor_file *f, const char *file, const unsigned char *needed,
                 void **values, kiln_diags *diags)
{
    bool ok = true;
    for (int i = 0; i < m->n_inputs; i++) {
        uint32_t id = m->inputs[i];
        if (!needed[id]) continue;
        const kiln_node *n = &m->graph.nodes[id];
        const kiln_tensor *t = kiln_tensor_file_find(f, n->attrs.name);
        if (!t) {
            kiln_diags_add(diags, file, 0, 0, n->attrs.name, "input missing from the inputs file");
            ok = false;
            continue;
        }
        if (!check_tensor(t, n, file, "input", diags)) {
            ok = false;
            continue;
        }
        values[id] = t->data;
    }
    return ok;
}

void init_params(const kiln_model *m, uint64_t seed, float **blobs)
{
    for (int i = 0; i < m->n_params; i++) {
        const kiln_node *n = &m->graph.nodes[m->params[i]];
        int64_t count = kiln_type_numel(&n->type);
        float *w = blobs[i];
        kiln_rng rng;
        kiln_rng_seed(&rng, seed, n->attrs.name);
        for (int64_t j = 0; j < count; j++) {
            switch (n->attrs.init) {
            case KILN_INIT_NORMAL: w[j] = (float)(kiln_rng_normal(&rng) * n->attrs.init_arg); break;
            case KILN_INIT_ZEROS: w[j] = 0.0f; break;
            case KILN_INIT_ONES: w[j] = 1.0f; break;
            case KILN_INIT_UNIFORM:
                w[j] = (float)((2.0 * kiln_rng_uniform(&rng) - 1.0) * n->attrs.init_arg);
                break;
            }
        }
    }
}
