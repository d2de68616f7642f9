/* target.c — which machine the generated code is for.
 *
 * Design: a kiln_target is a triple, a CPU name, a feature string and one
 * LLVMTargetMachine (PIC, aggressive) built from them. The JIT uses the host's
 * (LLVMGetHostCPUName / LLVMGetHostCPUFeatures); AOT may name another CPU. Every function
 * kiln emits is tagged with the target's CPU and features and with
 * "prefer-vector-width"="512" (../shared/DESIGN.md, "LLVM facts measured": Intel AVX-512 parts otherwise
 * vectorise at 256 bits). "min-legal-vector-width" is never set.
 *
 * vector_floats is the f32 lane count of the widest vector worth using: 16 with
 * avx512f, 8 with avx2 or avx, else 4 (SSE), read off the CPU (the host's features or
 * the named CPU) and then the features added or removed (vector_floats below). Kernels
 * that write explicit vector IR (the GEMM micro-kernel) size their tiles from it.
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

/* +1 if the comma-separated feature list adds `name`, −1 if it removes it, else 0. */
static int feature_sign(const char *features, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = features; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n + 1 && (p[0] == '+' || p[0] == '-') && memcmp(p + 1, name, n) == 0) return p[0] == '+' ? 1 : -1;
        p = end ? end + 1 : NULL;
    }
    return 0;
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
    "alderlake", "amdfam10", "arrowlake", "arrowlake-s", "arrowlake_s", "athlon-fx", "athlon64",
    "athlon64-sse3", "atom", "atom_sse4_2", "atom_sse4_2_movbe", "barcelona", "bdver1", "bdver2",
    "bdver3", "bdver4", "bonnell", "broadwell", "btver1", "btver2", "cannonlake", "cascadelake",
    "clearwaterforest", "cooperlake", "core-avx-i", "core-avx2", "core2", "core_2_duo_sse4_1",
    "core_2_duo_ssse3", "core_2nd_gen_avx", "core_3rd_gen_avx", "core_4th_gen_avx",
    "core_4th_gen_avx_tsx", "core_5th_gen_avx", "core_5th_gen_avx_tsx", "core_aes_pclmulqdq",
    "core_i7_sse4_2", "corei7", "corei7-avx", "emeraldrapids", "generic", "goldmont",
    "goldmont-plus", "goldmont_plus", "gracemont", "grandridge", "graniterapids",
    "graniterapids-d", "graniterapids_d", "haswell", "icelake-client", "icelake-server",
    "icelake_client", "icelake_server", "ivybridge", "k8", "k8-sse3", "knl", "knm", "lunarlake",
    "meteorlake", "mic_avx512", "nehalem", "nocona", "opteron", "opteron-sse3", "pantherlake",
    "penryn", "raptorlake", "rocketlake", "sandybridge", "sapphirerapids", "sierraforest",
    "silvermont", "skx", "skylake", "skylake-avx512", "skylake_avx512", "slm", "tigerlake",
    "tremont", "westmere", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "znver1", "znver2",
    "znver3", "znver4", "znver5"
};
#define N_X86_CPUS ((int)(sizeof x86_cpus / sizeof x86_cpus[0]))

/* The x86 CPU names LLVM 19 knows that have no 64-bit mode (no "64bit" feature). kiln
 * generates x86-64 code, and LLVM stops with a fatal error ("64-bit code requested on a
 * subtarget that doesn't support it") for these, so they are refused by name. */
static const char *const x86_cpus_32bit[] = {
    "i386", "i486", "i586", "i686", "pentium", "pentium-mmx", "pentium2", "pentium3", "pentium3m",
    "pentium-m", "pentium4", "pentium4m", "pentium_4", "pentium_4_sse3", "pentium_ii",
    "pentium_iii", "pentium_iii_no_xmm_regs", "pentium_m", "pentium_mmx", "pentium_pro",
    "pentiumpro", "prescott", "yonah", "athlon", "athlon-4", "athlon-mp", "athlon-tbird",
    "athlon-xp", "k6", "k6-2", "k6-3", "c3", "c3-2", "geode", "lakemont", "winchip-c6", "winchip2"
};
#define N_X86_CPUS_32BIT ((int)(sizeof x86_cpus_32bit / sizeof x86_cpus_32bit[0]))

static bool is_x86(const char *triple)
{
    return strncmp(triple, "x86_64", 6) == 0 || (triple[0] == 'i' && strncmp(triple + 2, "86", 2) == 0);
}

/* names[0..n) joined by spaces, malloc'd. */
static char *join_names(const char *const *names, int n)
{
    size_t cap = 1;
    for (int i = 0; i < n; i++) cap += strlen(names[i]) + 1;
    char *all = malloc(cap), *p = all;
    KILN_ASSERT(all != NULL);
    *p = '\0';
    for (int i = 0; i < n; i++) p += sprintf(p, "%s%s", i ? " " : "", names[i]);
    return all;
}

/* A diagnostic for an unknown CPU name: the nearest name, then all of them. */
static void unknown_cpu(const char *cpu, kiln_diags *d)
{
    char *all = join_names(x86_cpus, N_X86_CPUS);
    const char *near = kiln_closest_name(cpu, x86_cpus, N_X86_CPUS);
    if (near)
        kiln_diags_add(d, NULL, 0, 0, "--target-cpu", "unknown CPU '%s'; did you mean '%s'? Valid names: %s", cpu, near,
                       all);
    else kiln_diags_add(d, NULL, 0, 0, "--target-cpu", "unknown CPU '%s'. Valid names: %s", cpu, all);
    free(all);
}

/* The x86 features --target-features may name: the x86-64 baseline first (N_X86_BASELINE
 * of them: every x86-64 CPU has them, so adding one changes nothing, and they may never
 * be removed), then the extensions of the x86-64-v2/v3/v4 levels and the later vector
 * ones. LLVM itself checks nothing that matters here: it warns about a name it does not
 * know and compiles on; without sse or sse2 its code generator crashes (x86-64 passes
 * floats in SSE registers) or stops with an error that leaves the build half done, and
 * soft-float reaches a fatal "Do not know how to soften". So kiln accepts only this list,
 * each name tried added and removed on a whole model (docs/cli.md). */
static const char *const x86_features[] = {
    /* baseline */
    "64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "x87",
    /* x86-64-v2 */
    "cx16", "popcnt", "sahf", "sse3", "sse4.1", "sse4.2", "ssse3",
    /* x86-64-v3 */
    "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave",
    /* x86-64-v4 and later AVX-512 */
    "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl", "avx512bf16", "avx512bitalg", "avx512fp16",
    "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512vnni", "avx512vpopcntdq", "avxvnni",
    /* other extensions CPUs list, harmless to kiln's code */
    "adx", "aes", "gfni", "pclmul", "vaes", "vpclmulqdq"
};
#define N_X86_FEATURES ((int)(sizeof x86_features / sizeof x86_features[0]))
#define N_X86_BASELINE 8

static int x86_feature_index(const char *name, size_t len)
{
    for (int i = 0; i < N_X86_FEATURES; i++)
        if (strlen(x86_features[i]) == len && memcmp(x86_features[i], name, len) == 0) return i;
    return -1;
}

/* One item of a feature string, "+name" or "-name" of `len` bytes, checked against the
 * table; `earlier` is the string before it, for names given twice. */
static void check_feature(const char *item, size_t len, const char *earlier, size_t earlier_len, kiln_diags *d)
{
    const char *name = item + 1;
    size_t n = len - 1;
    char shown[64];
    snprintf(shown, sizeof shown, "%.*s%s", (int)(n < 40 ? n : 40), name, n < 40 ? "" : "...");
    int at = x86_feature_index(name, n);
    if (at < 0 && n == 10 && memcmp(name, "soft-float", 10) == 0) {
        kiln_diags_add(d, NULL, 0, 0, "--target-features",
                       "'soft-float' is not supported: kiln's kernels compute in SSE/AVX registers");
    } else if (at < 0) {
        char *all = join_names(x86_features, N_X86_FEATURES);
        const char *near = n < 40 ? kiln_closest_name(shown, x86_features, N_X86_FEATURES) : NULL;
        if (near)
            kiln_diags_add(d, NULL, 0, 0, "--target-features",
                           "unknown feature '%s'; did you mean '%s'? Features kiln compiles for: %s", shown, near, all);
        else
            kiln_diags_add(d, NULL, 0, 0, "--target-features", "unknown feature '%s'. Features kiln compiles for: %s",
                           shown, all);
        free(all);
    } else if (item[0] == '-' && at < N_X86_BASELINE) {
        char *base = join_names(x86_features, N_X86_BASELINE);
        kiln_diags_add(d, NULL, 0, 0, "--target-features",
                       "'-%s' removes part of the x86-64 baseline (%s), which kiln's code needs", shown, base);
        free(base);
    }
    /* the same name twice, as +x,-x: which one LLVM honours is its business, not the user's */
    for (const char *p = earlier; p < earlier + earlier_len;) {
        const char *end = memchr(p, ',', (size_t)(earlier + earlier_len - p));
        size_t plen = end ? (size_t)(end - p) : (size_t)(earlier + earlier_len - p);
        if (plen == len && memcmp(p + 1, name, n) == 0) {
            kiln_diags_add(d, NULL, 0, 0, "--target-features", "names '%s' twice", shown);
            break;
        }
        p += plen + 1;
    }
}

/* Whether `cpu` (NULL: the host) has AVX-512 of its own: the CPUs of the AVX-512 width
 * table, and Knights Landing / Mill (AVX-512 without VL). */
static bool cpu_has_avx512(const char *cpu)
{
    if (!cpu) {
        char *host = LLVMGetHostCPUFeatures();
        bool has = has_feature(host, "avx512f");
        LLVMDisposeMessage(host);
        return has;
    }
    return vector_floats_of_cpu(cpu) == 16 || strcmp(cpu, "knl") == 0 || strcmp(cpu, "knm") == 0 ||
           strcmp(cpu, "mic_avx512") == 0;
}

/* AVX-512 features added to a CPU without AVX-512 must include avx512vl (avx512fp16
 * brings it along): without VL, LLVM 19 cannot select the 8-wide mask compares of
 * kiln's kernels and stops with a fatal error ("Cannot select: v8i1 = setcc"). A CPU
 * with AVX-512 compiles fine without VL (knl, or -avx512vl), so only additions count. */
static void check_avx512_needs_vl(const char *cpu, const char *features, kiln_diags *d)
{
    if (feature_sign(features, "avx512vl") > 0 || feature_sign(features, "avx512fp16") > 0) return;
    for (const char *p = features; p && *p;) {
        const char *end = strchr(p, ',');
        if (strncmp(p, "+avx512", 7) == 0) {
            if (cpu_has_avx512(cpu)) return;
            size_t len = end ? (size_t)(end - p) : strlen(p);
            kiln_diags_add(d, NULL, 0, 0, "--target-features",
                           "'%.*s' on a CPU without AVX-512 (%s) needs avx512vl too: add +avx512vl", (int)len, p,
                           cpu ? cpu : "this machine's");
            return;
        }
        p = end ? end + 1 : NULL;
    }
}

bool kiln_target_features_check(const char *cpu, const char *features, kiln_diags *d)
{
    if (!features || !*features) return true;
    char *triple = LLVMGetDefaultTargetTriple();
    bool x86 = is_x86(triple);
    LLVMDisposeMessage(triple);
    int before = d->n + d->dropped;
    for (const char *p = features;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            kiln_diags_add(d, NULL, 0, 0, "--target-features", "an empty item in '%s' (the form is +name,-name,...)",
                           features);
        else if (len == 1 || (p[0] != '+' && p[0] != '-'))
            kiln_diags_add(d, NULL, 0, 0, "--target-features",
                           "'%.*s' must be +NAME (add a feature) or -NAME (remove one)", (int)(len < 40 ? len : 40), p);
        else if (x86)
            check_feature(p, len, features, (size_t)(p - features), d);
        if (!end) break;
        p = end + 1;
    }
    if (x86 && d->n + d->dropped == before) check_avx512_needs_vl(cpu, features, d);
    return d->n + d->dropped == before;
}

static char *dup_str(const char *s)
{
    char *c = strdup(s ? s : "");
    KILN_ASSERT(c != NULL);
    return c;
}

/* The vector width: what the CPU has (the named CPU's table entry, or the host's own
 * features), then what --target-features adds or removes (until 2026-12-07 any feature
 * string without +avx… dropped a named CPU to 4: --target-cpu haswell --target-features
 * +f16c compiled SSE kernels). Removing avx512f (or avx2, which it needs) leaves 8,
 * removing avx leaves 4. */
static int vector_floats(const char *cpu, const char *features)
{
    int w;
    if (cpu) {
        w = vector_floats_of_cpu(cpu);
    } else {
        char *host = LLVMGetHostCPUFeatures();
        w = has_feature(host, "avx512f") ? 16 : has_feature(host, "avx2") || has_feature(host, "avx") ? 8 : 4;
        LLVMDisposeMessage(host);
    }
    if (feature_sign(features, "avx512f") > 0) w = 16;
    else if (w < 8 && (feature_sign(features, "avx2") > 0 || feature_sign(features, "avx") > 0)) w = 8;
    if (feature_sign(features, "avx") < 0) w = 4;
    else if (w == 16 && (feature_sign(features, "avx512f") < 0 || feature_sign(features, "avx2") < 0)) w = 8;
    return w;
}

bool kiln_target_cpu_known(const char *cpu, kiln_diags *d)
{
    char *triple = LLVMGetDefaultTargetTriple();
    bool known = !is_x86(triple);
    LLVMDisposeMessage(triple);
    for (int i = 0; i < N_X86_CPUS && !known; i++) known = strcmp(cpu, x86_cpus[i]) == 0;
    for (int i = 0; i < N_X86_CPUS_32BIT && !known; i++)
        if (strcmp(cpu, x86_cpus_32bit[i]) == 0) {
            kiln_diags_add(d, NULL, 0, 0, "--target-cpu",
                           "'%s' is a 32-bit CPU: kiln compiles x86-64 code, for a CPU with 64-bit mode "
                           "(x86-64, k8, nocona, core2 or later)", cpu);
            return false;
        }
    if (!known) unknown_cpu(cpu, d);
    return known;
}

bool kiln_target_for(kiln_target *t, const char *cpu, const char *features, kiln_diags *d)
{
    pthread_once(&init_once, init_llvm_native);
    memset(t, 0, sizeof *t);
    if (!kiln_target_features_check(cpu, features, d)) return false;
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
        if (!kiln_target_cpu_known(cpu, d)) {
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
    t->vector_floats = vector_floats(cpu, features);
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
