/* target.c — which machine the generated code is for.
 *
 * Design: a kiln_target is a triple, a CPU name, a feature string and one
 * LLVMTargetMachine (PIC, aggressive) built from them. The JIT uses the host's
 * (LLVMGetHostCPUName / LLVMGetHostCPUFeatures); AOT may name another CPU. Every function
 * kiln emits is tagged with the target's CPU and features and with
 * "prefer-vector-width"="512" (DESIGN.md, "LLVM facts": Intel AVX-512 parts otherwise
 * vectorise at 256 bits). "min-legal-vector-width" is never set.
 *
 * vector_floats is the f32 lane count of the widest vector worth using, read off the
 * features: 16 with +avx512f, 8 with +avx2 or +avx, else 4 (SSE). Kernels that write
 * explicit vector IR (the GEMM micro-kernel) size their tiles from it.
 */
#include <llvm-c/Target.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_llvm_native(void)
{
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    LLVMInitializeNativeAsmParser();
}

/* true if the comma-separated feature list enables exactly `name` ("+name"). */
static bool has_feature(const char *features, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = features; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n + 1 && p[0] == '+' && memcmp(p + 1, name, n) == 0) return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* When AOT names a CPU without features, LLVM derives them from the CPU, but the C API
 * does not tell us which; this table is only used for the vector width. */
static int vector_floats_of_cpu(const char *cpu)
{
    static const char *const avx512[] = {"skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
                                         "icelake-client", "icelake-server", "tigerlake", "rocketlake",
                                         "sapphirerapids", "emeraldrapids", "graniterapids", "znver4",
                                         "znver5", "x86-64-v4"};
    static const char *const avx2[] = {"haswell", "broadwell", "skylake", "alderlake", "raptorlake",
                                       "meteorlake", "znver1", "znver2", "znver3", "x86-64-v3",
                                       "sandybridge", "ivybridge", "bdver4"};
    for (size_t i = 0; i < sizeof avx512 / sizeof avx512[0]; i++)
        if (strcmp(cpu, avx512[i]) == 0) return 16;
    for (size_t i = 0; i < sizeof avx2 / sizeof avx2[0]; i++)
        if (strcmp(cpu, avx2[i]) == 0) return 8;
    return 4;
}

static char *dup_str(const char *s)
{
    char *c = strdup(s ? s : "");
    KILN_ASSERT(c != NULL);
    return c;
}

bool kiln_target_for(kiln_target *t, const char *cpu, const char *features, kiln_diags *d)
{
    pthread_once(&init_once, init_llvm_native);
    memset(t, 0, sizeof *t);
    char *triple = LLVMGetDefaultTargetTriple();
    t->triple = dup_str(triple);
    LLVMDisposeMessage(triple);
    if (!cpu) {
        char *host_cpu = LLVMGetHostCPUName(), *host_features = LLVMGetHostCPUFeatures();
        t->cpu = dup_str(host_cpu);
        t->features = dup_str(features ? features : host_features); /* features alone: the host CPU with them */
        LLVMDisposeMessage(host_cpu);
        LLVMDisposeMessage(host_features);
    } else {
        t->cpu = dup_str(cpu);
        t->features = dup_str(features);
    }

    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(t->triple, &target, &err)) {
        kiln_diags_add(d, NULL, 0, 0, "target", "no LLVM target for %s: %s", t->triple, err ? err : "?");
        LLVMDisposeMessage(err);
        kiln_target_free(t);
        return false;
    }
    t->tm = LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features, LLVMCodeGenLevelAggressive,
                                    LLVMRelocPIC, LLVMCodeModelDefault);
    if (!t->tm) {
        kiln_diags_add(d, NULL, 0, 0, "target", "cannot create a target machine for cpu '%s'", t->cpu);
        kiln_target_free(t);
        return false;
    }
    if (has_feature(t->features, "avx512f")) t->vector_floats = 16;
    else if (has_feature(t->features, "avx2") || has_feature(t->features, "avx")) t->vector_floats = 8;
    else if (cpu && !(features && *features)) t->vector_floats = vector_floats_of_cpu(t->cpu);
    else t->vector_floats = 4;
    return true;
}

bool kiln_target_host(kiln_target *t, kiln_diags *d) { return kiln_target_for(t, NULL, NULL, d); }

void kiln_target_free(kiln_target *t)
{
    if (t->tm) LLVMDisposeTargetMachine(t->tm);
    free(t->triple);
    free(t->cpu);
    free(t->features);
    memset(t, 0, sizeof *t);
}

void kiln_target_tag_function(const kiln_target *t, LLVMValueRef fn)
{
    LLVMAddTargetDependentFunctionAttr(fn, "target-cpu", t->cpu);
    if (t->features && *t->features) LLVMAddTargetDependentFunctionAttr(fn, "target-features", t->features);
    LLVMAddTargetDependentFunctionAttr(fn, "prefer-vector-width", "512");
}
