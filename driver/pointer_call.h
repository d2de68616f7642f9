/* pointer_call.h — a prepared libffi call of a JIT entry point.
 *
 * Every compiled entry takes only pointers (params, workspace, inputs, outputs…) and
 * returns int, but how many depends on the model: the driver calls it through libffi
 * with a call interface prepared once per entry. */
#ifndef KILN_POINTER_CALL_H
#define KILN_POINTER_CALL_H

#include <ffi.h>
#include <stdint.h>

typedef struct pointer_call {
    ffi_cif cif;
    ffi_type **types;
    void **args;      /* set these before each call */
    void **arg_ptrs;  /* libffi's view: &args[i] */
} pointer_call;

/* Prepares a call of n pointer arguments returning int. */
void pointer_call_init(pointer_call *pc, uint32_t n);
void pointer_call_free(pointer_call *pc);
/* Calls fn with pc->args; returns its int. */
int pointer_call_run(pointer_call *pc, void *fn);

#endif
