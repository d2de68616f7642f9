/* llvm_lib.c — libLLVM as a part of the kiln process, for the driver, which includes no
 * LLVM header of its own: LLVM's version, the fatal-error handler, and an address in
 * LLVM's code (to find the object that holds it).
 */
#include <stdint.h>

#include <llvm-c/Core.h>
#include <llvm-c/ErrorHandling.h>

#include "codegen.h"

void kiln_codegen_version(unsigned *major, unsigned *minor, unsigned *patch)
{
    LLVMGetVersion(major, minor, patch);
}

/* LLVM ends the process on a fatal error (after this handler, or instead of it). kiln
 * checks its input before LLVM sees it, so such an error is kiln's bug: it is reported
 * as one (kiln_internal_error's words and abort), after removing the temporary
 * directory of a library being built, so that even then nothing is left behind. */
static void llvm_fatal_error(const char *reason) { kiln_llvm_internal_error(reason); }

void kiln_codegen_install_fatal_handler(void) { LLVMInstallFatalErrorHandler(llvm_fatal_error); }

const void *kiln_codegen_text_address(void) { return (const void *)(uintptr_t)&LLVMContextCreate; }
