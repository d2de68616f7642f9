/* pointer_call.c — see pointer_call.h. */
#include "pointer_call.h"

#include <stdlib.h>
#include <string.h>

#include "diag.h"

void pointer_call_init(pointer_call *pc, uint32_t n)
{
    memset(pc, 0, sizeof *pc);
    pc->types = calloc(n ? n : 1, sizeof *pc->types);
    pc->args = calloc(n ? n : 1, sizeof *pc->args);
    pc->arg_ptrs = calloc(n ? n : 1, sizeof *pc->arg_ptrs);
    KILN_ASSERT(pc->types && pc->args && pc->arg_ptrs);
    for (uint32_t i = 0; i < n; i++) {
        pc->types[i] = &ffi_type_pointer;
        pc->arg_ptrs[i] = &pc->args[i];
    }
    KILN_ASSERT(ffi_prep_cif(&pc->cif, FFI_DEFAULT_ABI, n, &ffi_type_sint, pc->types) == FFI_OK);
}

void pointer_call_free(pointer_call *pc)
{
    free(pc->types);
    free(pc->args);
    free(pc->arg_ptrs);
    memset(pc, 0, sizeof *pc);
}

int pointer_call_run(pointer_call *pc, void *fn)
{
    ffi_arg rc = 0;
    ffi_call(&pc->cif, FFI_FN(fn), &rc, pc->arg_ptrs);
    return (int)rc;
}
