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
#include <stdio.h>
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

/* The x86 CPU names LLVM 19 accepts (`llc -mtriple=x86_64 -mcpu=help`). The C API has no
 * query for them, and LLVM only warns on stderr about an unknown one and then generates
 * code for a generic CPU, which would be a silent surprise in an exported library. */
static const char *const x86_cpus[] = {
    "alderlake", "amdfam10", "arrowlake", "arrowlake-s", "arrowlake_s", "athlon", "athlon-4",
    "athlon-fx", "athlon-mp", "athlon-tbird", "athlon-xp", "athlon64", "athlon64-sse3", "atom",
    "atom_sse4_2", "atom_sse4_2_movbe", "barcelona", "bdver1", "bdver2", "bdver3", "bdver4",
    "bonnell", "broadwell", "btver1", "btver2", "c3", "c3-2", "cannonlake", "cascadelake",
    "clearwaterforest", "cooperlake", "core-avx-i", "core-avx2", "core2", "core_2_duo_sse4_1",
    "core_2_duo_ssse3", "core_2nd_gen_avx", "core_3rd_gen_avx", "core_4th_gen_avx",
    "core_4th_gen_avx_tsx", "core_5th_gen_avx", "core_5th_gen_avx_tsx", "core_aes_pclmulqdq",
    "core_i7_sse4_2", "corei7", "corei7-avx", "emeraldrapids", "generic", "geode", "goldmont",
    "goldmont-plus", "goldmont_plus", "gracemont", "grandridge", "graniterapids",
    "graniterapids-d", "graniterapids_d", "haswell", "i386", "i486", "i586", "i686",
    "icelake-client", "icelake-server", "icelake_client", "icelake_server", "ivybridge", "k6",
    "k6-2", "k6-3", "k8", "k8-sse3", "knl", "knm", "lakemont", "lunarlake", "meteorlake",
    "mic_avx512", "nehalem", "nocona", "opteron", "opteron-sse3", "pantherlake", "penryn",
    "pentium", "pentium-m", "pentium-mmx", "pentium2", "pentium3", "pentium3m", "pentium4",
    "pentium4m", "pentium_4", "pentium_4_sse3", "pentium_ii", "pentium_iii",
    "pentium_iii_no_xmm_regs", "pentium_m", "pentium_mmx", "pentium_pro", "pentiumpro", "prescott",
    "raptorlake", "rocketlake", "sandybridge", "sapphirerapids", "sierraforest", "silvermont",
    "skx", "skylake", "skylake-avx512", "skylake_avx512", "slm", "tigerlake", "tremont",
    "westmere", "winchip-c6", "winchip2", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "yonah",
    "znver1", "znver2", "znver3", "znver4", "znver5"
};
#define N_X86_CPUS ((int)(sizeof x86_cpus / sizeof x86_cpus[0]))

static bool is_x86(const char *triple)
{
    return strncmp(triple, "x86_64", 6) == 0 || (triple[0] == 'i' && strncmp(triple + 2, "86", 2) == 0);
}

/* A diagnostic for an unknown CPU name: the nearest name, then all of them. */
static void unknown_cpu(const char *cpu, kiln_diags *d)
{
    size_t cap = 16;
    for (int i = 0; i < N_X86_CPUS; i++) cap += strlen(x86_cpus[i]) + 1;
    char *all = malloc(cap), *p = all;
    KILN_ASSERT(all != NULL);
    for (int i = 0; i < N_X86_CPUS; i++) p += sprintf(p, "%s%s", i ? " " : "", x86_cpus[i]);
    const char *near = kiln_closest_name(cpu, x86_cpus, N_X86_CPUS);
    if (near)
        kiln_diags_add(d, NULL, 0, 0, "--target-cpu", "unknown CPU '%s'; did you mean '%s'? Valid names: %s", cpu, near,
                       all);
    else kiln_diags_add(d, NULL, 0, 0, "--target-cpu", "unknown CPU '%s'. Valid names: %s", cpu, all);
    free(all);
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
        bool known = !is_x86(t->triple);
        for (int i = 0; i < N_X86_CPUS && !known; i++) known = strcmp(cpu, x86_cpus[i]) == 0;
        if (!known) {
            unknown_cpu(cpu, d);
            kiln_target_free(t);
            return false;
        }
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
