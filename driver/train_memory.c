/* train_memory.c — give back what compiling left resident before the blobs are allocated.
 *
 * Why. `kiln train`'s peak RSS is what compiling leaves resident plus the parameter,
 * optimizer and workspace blobs (docs/training.md, "Peak RSS"). Of the ~80 MiB resident
 * after the char_gpt training step is compiled, ~55 MiB are pages of LLVM's own machine
 * code (libLLVM's text, faulted in by the optimisation and code generation passes) and
 * ~5 MiB free heap that glibc keeps. The training loop runs only the JIT's code and
 * kiln's runtime, never LLVM's, so neither is needed again.
 *
 * How. malloc_trim(0) returns the free heap. The text pages are clean, private, read-
 * and-execute mappings of the library file: madvise(MADV_DONTNEED) drops them from the
 * process (the page cache keeps them), and a later call into LLVM (another compile)
 * faults them back in from the file, unchanged — a text segment is never written. Only
 * mappings with permissions exactly r-xp of the object that holds LLVM's code (found
 * with dladdr on an address in it, kiln_codegen_text_address) are dropped, and only
 * when that object is a shared library, not kiln itself; writable or relocated (RELRO)
 * data is never touched, as dropping it would lose its contents. Linux only; elsewhere
 * this does nothing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

#if defined(__linux__)
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>

long train_release_compiler_memory(void)
{
    malloc_trim(0);
    Dl_info info;
    if (!dladdr(kiln_codegen_text_address(), &info) || !info.dli_fname || !info.dli_fname[0]) return 0;
    Dl_info self;
    if (dladdr((void *)(uintptr_t)&train_release_compiler_memory, &self) && self.dli_fname &&
        strcmp(self.dli_fname, info.dli_fname) == 0)
        return 0; /* LLVM is linked into kiln: its text is kiln's own */
    char *real = realpath(info.dli_fname, NULL); /* /proc/self/maps names the file itself */
    if (!real) return 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) {
        free(real);
        return 0;
    }
    char line[4096];
    long dropped = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perm[8];
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perm, &path_at) != 3 || !path_at) continue;
        char *path = line + path_at, *nl = strchr(path, '\n');
        if (nl) *nl = 0;
        if (strcmp(perm, "r-xp") != 0 || strcmp(path, real) != 0) continue;
        if (madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0) dropped += (long)(hi - lo);
    }
    fclose(f);
    free(real);
    return dropped;
}
#else
long train_release_compiler_memory(void) { return 0; }
#endif
