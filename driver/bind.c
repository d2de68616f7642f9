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

/* The names of f's tensors (borrowed), for kiln_closest_name; free() the array. */
static const char **file_names(const kiln_tensor_file *f)
{
    const char **names = calloc((size_t)f->n + 1, sizeof *names);
    KILN_ASSERT(names != NULL);
    for (int i = 0; i < f->n; i++) names[i] = f->tensors[i].name;
    return names;
}

bool bind_missing_summary(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const kiln_tensor_file *f,
                          const char *file, const char *what, kiln_diags *d)
{
    uint32_t missing = 0, first = KILN_NONE;
    for (uint32_t i = 0; i < n; i++)
        if (!kiln_tensor_file_find(f, g->nodes[nodes[i]].attrs.name)) {
            if (first == KILN_NONE) first = nodes[i];
            missing++;
        }
    /* a few missing names are worth a line each (with "did you mean"); most of them
     * mean the file belongs to another model */
    if (missing <= 3 || missing * 2 <= n) return false;
    int extra = 0;
    const char *example = NULL;
    bool binding_optim = strncmp(g->nodes[nodes[0]].attrs.name, "optim.", 6) == 0;
    for (int j = 0; j < f->n; j++) {
        bool known = false;
        for (uint32_t i = 0; i < n && !known; i++) known = strcmp(f->tensors[j].name, g->nodes[nodes[i]].attrs.name) == 0;
        /* only the kind being bound: the file's parameters are not extra optimizer state */
        bool optim = strncmp(f->tensors[j].name, "optim.", 6) == 0;
        if (known || optim != binding_optim) continue;
        if (!example) example = f->tensors[j].name;
        extra++;
    }
    char has[200] = "";
    if (extra) snprintf(has, sizeof has, ", and it has %d the model lacks (the first: %s)", extra, example);
    kiln_diags_add(d, file, 0, 0, NULL,
                   "%u of the model's %u %s are missing from it (the first: %s)%s: weights of another model? "
                   "(kiln check MODEL.json lists the names the model needs)",
                   missing, n, what, g->nodes[first].attrs.name, has);
    return true;
}

/* "; did you mean 'NAME'?" when f has a tensor named like `name`, else "". */
static void did_you_mean(const kiln_tensor_file *f, const char *name, char *buf, size_t cap)
{
    const char **names = file_names(f);
    const char *near = kiln_closest_name(name, names, f->n);
    if (near) snprintf(buf, cap, "; did you mean '%s'?", near);
    else buf[0] = 0;
    free(names);
}

/* Node n's tensor in f (a "parameter" or an "input", from the file called `holder` in the
 * message) into values[id]; false with a diagnostic when it is missing or does not fit. */
static bool bind_one(const kiln_tensor_file *f, const char *file, const kiln_node *n, uint32_t id, const char *what,
                     const char *holder, void **values, kiln_diags *diags)
{
    const kiln_tensor *t = kiln_tensor_file_find(f, n->attrs.name);
    if (!t) {
        char hint[160];
        did_you_mean(f, n->attrs.name, hint, sizeof hint);
        kiln_diags_add(diags, file, 0, 0, n->attrs.name, "%s missing from the %s file%s", what, holder, hint);
        return false;
    }
    if (!check_tensor(t, n, file, what, diags)) return false;
    values[id] = t->data;
    return true;
}

bool bind_params(const kiln_model *m, const kiln_tensor_file *f, const char *file, void **values,
                 kiln_diags *diags)
{
    if (bind_missing_summary(&m->graph, m->params, (uint32_t)m->n_params, f, file, "parameters", diags)) return false;
    bool ok = true;
    for (int i = 0; i < m->n_params; i++) {
        uint32_t id = m->params[i];
        ok &= bind_one(f, file, &m->graph.nodes[id], id, "parameter", "weights", values, diags);
    }
    return ok;
}

/* A tensor of the inputs file that names none of the model's inputs: a misspelt or stale
 * name would otherwise be dropped without a word (the input it was meant for may even
 * be unneeded, so nothing else would notice). Reported with the inputs there are. */
static bool input_known(const kiln_model *m, const kiln_tensor *t, const char *file, kiln_diags *diags)
{
    const char *names[64];
    int n = 0;
    for (int i = 0; i < m->n_inputs; i++) {
        const char *name = m->graph.nodes[m->inputs[i]].attrs.name;
        if (strcmp(name, t->name) == 0) return true;
        if (n < 64) names[n++] = name;
    }
    char list[256] = "", hint[160] = "";
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", names[i]);
    if (len >= sizeof list || n < m->n_inputs) /* too many to list: the first ones, then "..." */
        snprintf(list + (len < sizeof list - 5 ? len : sizeof list - 5), 5, "...");
    const char *near = kiln_closest_name(t->name, names, n);
    if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
    if (m->n_inputs == 0)
        kiln_diags_add(diags, file, 0, 0, t->name, "the model has no inputs, so the inputs file must be empty");
    else
        kiln_diags_add(diags, file, 0, 0, t->name, "the model has no input of this name (its inputs: %s)%s", list,
                       hint);
    return false;
}

bool bind_inputs(const kiln_model *m, const kiln_tensor_file *f, const char *file, const unsigned char *needed,
                 void **values, kiln_diags *diags)
{
    bool ok = true;
    for (int j = 0; j < f->n; j++) ok &= input_known(m, &f->tensors[j], file, diags);
    for (int i = 0; i < m->n_inputs; i++) {
        uint32_t id = m->inputs[i];
        if (needed[id]) ok &= bind_one(f, file, &m->graph.nodes[id], id, "input", "inputs", values, diags);
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
