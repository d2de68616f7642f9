/* trainsplit.c — the training step split in two, so that gradients can be averaged
 * between the backward pass and the optimizer update (data-parallel training,
 * docs/distributed.md; a C program doing its own averaging, docs/cli.md).
 *
 *     int NAME_train_grad(const float *params, float *optim, void *workspace,
 *                         inputs…, float *loss,
 *                         void (*ready)(void *ctx, int32_t i), void *ctx)
 *         forward + backward: writes the loss and every trained parameter's gradient
 *         into the gradient area at the end of the optimizer blob; reads optim.step
 *         (dropout's masks, as the fused step does) and changes nothing else. Calls
 *         ready(ctx, i) (unless NULL) as soon as gradient i (area order) is final, so
 *         that averaging it overlaps the rest of the backward pass (codegen.h).
 *     int NAME_train_apply(float *params, float *optim, void *workspace, float lr)
 *         the optimizer update of kiln_optim_build with the gradients read from that
 *         area: clipping (its norm is of the gradients as they are then, i.e. after
 *         averaging: the global norm), AdamW or SGD, the step counter.
 *
 * Both are ordinary compiled graphs over the same parameter blob and one "split
 * optimizer blob" whose layout is
 *
 *     optim.step, optim.…   the optimizer's states exactly as the fused step lays them
 *                           out (same names, shapes and order: same offsets)
 *     grad.NAME…            then one tensor per trained parameter, model order
 *
 * The memory planner places states in list order (64-byte aligned), so the optimizer
 * part is byte for byte the fused step's blob: checkpoints and the code that saves and
 * restores them do not know which step ran. Both graphs list all these states (the
 * gradient graph holds the optimizer's as unread placeholders, except optim.step), so
 * both entries agree on every offset (checked after compiling). Gradients are STATE
 * nodes: the gradient graph writes them as updates (usually computed in place), the
 * update graph reads them where the fused step reads the backward's values.
 *
 * Which parameters are trained is decided once, on the gradient graph, by the fused
 * step's rule (kiln_optim_trained: not frozen, and a gradient that is not autodiff's
 * zeros constant), so the split step trains the same tensors and has the same optimizer
 * state names (checkpoints are interchangeable).
 *
 * The gradient graph is a stateful entry (codegen.h) with dropout on; the update graph a
 * training entry without inputs. Computed separately, the two entries give the fused
 * step's result within float rounding (kernels are fused differently across the split).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "passes.h"
#include "train.h"

static uint32_t add_state(kiln_graph *g, const char *name, const kiln_type *t, kiln_diags *d)
{
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = t->rank;
    memcpy(a.shape, t->dims, sizeof a.shape);
    a.name = name;
    return kiln_graph_add(g, KILN_OP_STATE, NULL, 0, &a, name, "train", d);
}

/* The gradient graph, first part: forward, loss, backward; which parameters are trained.
 * *grads (malloc'd) are the backward's gradient nodes. */
static bool grad_backward(kiln_model *m, train_split *s, uint32_t **grads, kiln_diags *d)
{
    if (!train_only_loss(m, d)) return false;
    kiln_graph *g = &m->graph;
    uint32_t n = (uint32_t)m->n_params;
    *grads = calloc(n ? n : 1, sizeof **grads);
    s->trained = calloc(n ? n : 1, sizeof *s->trained);
    KILN_ASSERT(*grads && s->trained);
    kiln_train_request tr = {.loss = g->loss, .params = m->params, .n_params = n, .options = &cli_pipeline};
    kiln_train_result res; /* the pipeline's autodiff stage */
    bool ok = kiln_pipeline_train(g, &tr, &res, d);
    s->n_forward = res.n_forward;
    if (ok) memcpy(*grads, res.grads, n * sizeof **grads);
    cli_print_dump(res.dump);
    kiln_train_result_free(&res);
    if (!ok) return false;
    kiln_optim_group *groups = NULL;
    kiln_optim_config cfg = train_optim_config(&m->train, &groups);
    for (uint32_t i = 0; i < n; i++) {
        s->trained[i] = kiln_optim_trained(g, &cfg, m->params[i], (*grads)[i]);
        s->n_grads += s->trained[i];
    }
    free(groups);
    return true;
}

/* The update graph: grad.NAME STATE nodes for the trained parameters, then the
 * optimizer reading them; s->apply_states = the optimizer's states in node order (the
 * fused step's order), then the gradients. */
static bool build_apply(kiln_model *m, train_split *s, kiln_diags *d)
{
    kiln_graph *g = &m->graph;
    g->n_outputs = 0; /* the forward graph stays, unread: only the updates are compiled */
    uint32_t n = (uint32_t)m->n_params, k = 0;
    uint32_t *params = calloc(n ? n : 1, sizeof *params), *grads = calloc(n ? n : 1, sizeof *grads);
    KILN_ASSERT(params && grads);
    bool ok = true;
    char name[300];
    for (uint32_t i = 0; ok && i < n; i++) {
        if (!s->trained[i]) continue;
        const kiln_node *p = &g->nodes[m->params[i]];
        snprintf(name, sizeof name, "grad.%s", p->attrs.name);
        kiln_type t = p->type;
        params[k] = m->params[i];
        grads[k] = add_state(g, name, &t, d);
        ok = grads[k++] != KILN_NONE;
    }
    uint32_t first_optim = g->n_nodes;
    kiln_optim_group *groups = NULL;
    kiln_optim_config cfg = train_optim_config(&m->train, &groups);
    /* the pipeline's optimizer stage, from the gradients read as state */
    kiln_train_request tr = {.loss = KILN_NONE, .params = params, .n_params = k, .grads = grads, .optim = &cfg,
                             .options = &cli_pipeline};
    kiln_train_result res = {0};
    ok = ok && kiln_pipeline_train(g, &tr, &res, d);
    if (ok) cli_print_dump(res.dump);
    uint32_t lr = res.optim.lr;
    kiln_train_result_free(&res);
    free(groups);
    if (ok) {
        s->lr = lr;
        s->apply_states = calloc(g->n_nodes, sizeof *s->apply_states);
        KILN_ASSERT(s->apply_states != NULL);
        for (uint32_t id = first_optim; id < g->n_nodes; id++)
            if (g->nodes[id].op == KILN_OP_STATE) s->apply_states[s->n_optim_states++] = id;
        for (uint32_t i = 0; i < k; i++) s->apply_states[s->n_optim_states + i] = grads[i];
        KILN_ASSERT(s->n_optim_states > 0 && strcmp(g->nodes[s->apply_states[0]].attrs.name, "optim.step") == 0);
    }
    free(params);
    free(grads);
    return ok;
}

/* The gradient graph, second part: the optimizer's states as placeholders (only
 * optim.step is read, by dropout: they give the gradients the update graph's offsets),
 * then grad.NAME ← gradient; checkpointing last. */
static bool grad_states(kiln_model *m, train_split *s, const uint32_t *grads, bool checkpoint, kiln_diags *d)
{
    kiln_graph *g = &m->graph;
    const kiln_graph *ag = &s->apply_model->graph;
    uint32_t n_states = s->n_optim_states + s->n_grads;
    s->grad_states = calloc(n_states, sizeof *s->grad_states);
    KILN_ASSERT(s->grad_states != NULL);
    bool ok = true;
    for (uint32_t i = 0; ok && i < s->n_optim_states; i++) {
        const kiln_node *a = &ag->nodes[s->apply_states[i]];
        kiln_type t = a->type;
        s->grad_states[i] = add_state(g, a->attrs.name, &t, d);
        ok = s->grad_states[i] != KILN_NONE;
    }
    uint32_t k = s->n_optim_states;
    char name[300];
    for (int i = 0; ok && i < m->n_params; i++) {
        if (!s->trained[i]) continue;
        const kiln_node *p = &g->nodes[m->params[i]];
        snprintf(name, sizeof name, "grad.%s", p->attrs.name);
        kiln_type t = p->type;
        uint32_t st = add_state(g, name, &t, d);
        if (st == KILN_NONE) ok = false;
        else kiln_graph_add_update(g, st, grads[i]);
        s->grad_states[k++] = st;
    }
    if (!ok) return false;
    s->grad_step = s->grad_states[0];
    if (!checkpoint) return true;
    /* activation checkpointing, as train_step_checkpoint does for the fused step */
    uint32_t *map = malloc(g->n_nodes * sizeof *map);
    KILN_ASSERT(map != NULL);
    kiln_checkpoint_result res;
    ok = kiln_checkpoint(g, s->n_forward, map, &res, d);
    if (ok) {
        for (uint32_t i = 0; i < n_states; i++) s->grad_states[i] = map[s->grad_states[i]];
        s->grad_step = map[s->grad_step];
        s->recompute_from = s->n_forward;
    }
    free(map);
    return ok;
}

bool train_split_build(kiln_model *grad_model, kiln_model *apply_model, bool checkpoint, train_split *s,
                       kiln_diags *d)
{
    memset(s, 0, sizeof *s);
    s->grad_model = grad_model;
    s->apply_model = apply_model;
    s->grad_step = s->lr = KILN_NONE;
    uint32_t *grads = NULL;
    bool ok = grad_backward(grad_model, s, &grads, d) && build_apply(apply_model, s, d) &&
              grad_states(grad_model, s, grads, checkpoint, d);
    free(grads);
    if (!ok) kiln_diags_set_file(d, grad_model->file);
    return ok;
}

void train_split_free(train_split *s)
{
    free(s->trained);
    free(s->grad_states);
    free(s->apply_states);
    memset(s, 0, sizeof *s);
}

kiln_compile_request train_split_grad_request(const train_split *s)
{
    const kiln_model *m = s->grad_model;
    return (kiln_compile_request){.g = &m->graph,
                                  .inputs = m->inputs,
                                  .n_inputs = (uint32_t)m->n_inputs,
                                  .params = m->params,
                                  .n_params = (uint32_t)m->n_params,
                                  .name = m->name,
                                  .stateful = true,
                                  .suffix = "train_grad",
                                  .states = s->grad_states,
                                  .n_states = s->n_optim_states + s->n_grads,
                                  .dropout = true,
                                  .dropout_step = s->grad_step,
                                  .dropout_seed = s->dropout_seed,
                                  .recompute_from = s->recompute_from,
                                  /* announces each gradient when final (overlap, dataparallel.c) */
                                  .ready_first = s->n_optim_states,
                                  .n_ready = s->n_grads,
                                  .pipeline = &cli_pipeline};
}

kiln_compile_request train_split_apply_request(const train_split *s)
{
    const kiln_model *m = s->apply_model;
    return (kiln_compile_request){.g = &m->graph,
                                  .params = m->params,
                                  .n_params = (uint32_t)m->n_params,
                                  .name = m->name,
                                  .train = true,
                                  .suffix = "train_apply",
                                  .states = s->apply_states,
                                  .n_states = s->n_optim_states + s->n_grads,
                                  .lr = s->lr,
                                  .pipeline = &cli_pipeline};
}

bool train_split_check(const train_split *s, const kiln_compiled *grad, const kiln_compiled *apply,
                       train_split_area *out)
{
    memset(out, 0, sizeof *out);
    if (grad->params_bytes != apply->params_bytes || grad->optim_bytes != apply->optim_bytes) return false;
    for (int i = 0; i < s->grad_model->n_params; i++)
        if (grad->param_offsets[i] != apply->param_offsets[i]) return false;
    for (uint32_t i = 0; i < s->n_optim_states + s->n_grads; i++)
        if (grad->state_offsets[i] != apply->state_offsets[i]) return false;
    out->grad_offset = s->n_grads ? apply->state_offsets[s->n_optim_states] : apply->optim_bytes;
    out->grad_bytes = apply->optim_bytes - out->grad_offset;
    out->optim_bytes = apply->optim_bytes;
    return true;
}
