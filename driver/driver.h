/* driver.h — the kiln command: one function per subcommand (cmd_*.c), each returning
 * the process exit status. Subcommands collect user errors in `diags`; main.c is the one
 * place that prints them.
 *
 * Exit status: 0 success, 1 a failure (bad model, bad file, run-time error), 2 a usage
 * error (unknown option, missing argument). */
#ifndef KILN_DRIVER_H
#define KILN_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"
#include "frontend.h"
#include "kiln/runtime.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

int cmd_check(int argc, char **argv, kiln_diags *diags);
int cmd_init(int argc, char **argv, kiln_diags *diags);
int cmd_run(int argc, char **argv, kiln_diags *diags);
int cmd_train(int argc, char **argv, kiln_diags *diags);
int cmd_eval(int argc, char **argv, kiln_diags *diags);
int cmd_embed(int argc, char **argv, kiln_diags *diags);
int cmd_compile(int argc, char **argv, kiln_diags *diags);
int cmd_bench(int argc, char **argv, kiln_diags *diags);
int cmd_generate(int argc, char **argv, kiln_diags *diags);
int cmd_plot(int argc, char **argv, kiln_diags *diags);

/* ---- bind.c: tensor files ↔ graph values ---- */

/* Adds a runtime error about the file `path` as a diagnostic printed in the usual
 * "FILE: TENSOR: error: MESSAGE" form (the runtime's message starts with "PATH: " and,
 * when it concerns one tensor, "tensor 'NAME': "). */
void bind_rt_error(kiln_diags *diags, const char *path, const kiln_rt_error *err);

/* The shapes of a tensor file's tensors, for dim binding (points into the file). */
kiln_given_input *bind_given_inputs(const kiln_tensor_file *f, int *n);
/* Marks the nodes needed to compute the graph's outputs (and its loss if with_loss). */
void bind_needed(const kiln_graph *g, bool with_loss, unsigned char *needed);
/* Points values[] of every PARAM node at the matching tensor of `f` (borrowed). Reports
 * every missing parameter and every shape mismatch; names in the file that the model
 * lacks are not looked at (a checkpoint also holds optimizer state). */
bool bind_params(const kiln_model *m, const kiln_tensor_file *f, const char *file, void **values,
                 kiln_diags *diags);
/* When more than three and more than half of the nodes' names are missing from f — the
 * weights of another model — adds one diagnostic saying so (how many, the first missing
 * name, one of the file's) instead of one per tensor, and returns true. `what` names the
 * nodes ("parameters"). */
bool bind_missing_summary(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const kiln_tensor_file *f,
                          const char *file, const char *what, kiln_diags *d);
/* Points values[] of every needed INPUT node at the matching tensor of `f`; a tensor of
 * `f` that names no input of the model is an error too (listing the model's inputs). */
bool bind_inputs(const kiln_model *m, const kiln_tensor_file *f, const char *file, const unsigned char *needed,
                 void **values, kiln_diags *diags);
/* Fresh parameters per SPEC section 1 `init`: one independent stream per parameter name. */
void init_params(const kiln_model *m, uint64_t seed, float **blobs);

#endif
