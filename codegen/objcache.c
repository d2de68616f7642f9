/* objcache.c — the JIT's cache of machine code: a compile whose LLVM IR was compiled
 * before, by the same kiln and the same LLVM for the same CPU, links the object files
 * saved then instead of optimising and compiling again (docs/codegen.md, "The compile
 * cache").
 *
 * Why: LLVM is nine tenths of a small model's compile (optimise + machine code), and the
 * same model is compiled over and over — `kiln generate` on every prompt, `kiln run` on
 * every input file, every rank of a distributed run. A hit costs the IR's printing and
 * hashing and the objects' linking: a few ms instead of hundreds.
 *
 * The key is a 128-bit hash of everything the machine code depends on:
 *   - the text of both unoptimised modules (kernels and GEMMs): every shape, stride,
 *     constant and function attribute (target-cpu, target-features) is in it;
 *   - the GNU build ID of the object holding kiln's codegen and of the one holding LLVM
 *     (the pass pipelines, the target machine's settings, LLVM's own code): any rebuild of
 *     either that changes a byte changes the key, so a stale entry is never used;
 *   - the target's triple, CPU and features.
 * Without a build ID (a linker that writes none) there is no cache.
 *
 * One file per key, DIR/<32 hex digits>.kobj: a header (magic, key, the two objects'
 * sizes, a hash of their bytes) and the two objects. A file that does not check out
 * (truncated, changed, another key) is a miss and is overwritten by the next store.
 * Files are written through the runtime's atomic files, so readers see a whole file or
 * none. A hit updates the file's time; a store that takes the directory past
 * OBJCACHE_MAX_BYTES deletes the least recently used files down to half of it.
 *
 * Trust: a cache entry is code that runs in the process, so the directory must be the
 * user's own: kiln creates it with mode 0700, refuses one owned by another user or
 * writable by others, and opens only regular files owned by the user (O_NOFOLLOW). The
 * hash is not cryptographic: it guards against accidents, not against someone who can
 * already write into the user's cache.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dl_iterate_phdr */
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <llvm-c/Core.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "../runtime/atomic_file.h"
#include "lower.h"

#define OBJCACHE_MAX_BYTES (512ll << 20)
#define OBJCACHE_MAX_OBJECT (1ll << 30) /* larger "objects" are damage, not code */

static const char magic[8] = {'K', 'I', 'L', 'N', 'O', 'B', 'J', '1'};

typedef struct header {
    char magic[8];
    uint64_t key[2];
    uint64_t size[OBJCACHE_OBJECTS];
    uint64_t payload_hash;
} header;

static char *cache_dir; /* NULL: off */

/* ---- hashing ------------------------------------------------------------------------------- */

/* Two 64-bit lanes with different multipliers over 8-byte words, each finished with a
 * splitmix64 step that mixes in the other: not cryptographic (see the top). */
typedef struct hash128 {
    uint64_t a, b, n;
} hash128;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void hash_init(hash128 *h)
{
    h->a = 0x243f6a8885a308d3ull;
    h->b = 0x13198a2e03707344ull;
    h->n = 0;
}

static void hash_word(hash128 *h, uint64_t w)
{
    h->a = (h->a ^ w) * 0x9e3779b97f4a7c15ull;
    h->a ^= h->a >> 32;
    h->b = (h->b + w) * 0xc2b2ae3d27d4eb4full;
    h->b = (h->b << 31) | (h->b >> 33);
}

static void hash_bytes(hash128 *h, const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        hash_word(h, w);
    }
    uint64_t tail = 0;
    memcpy(&tail, s + i, n - i);
    hash_word(h, tail ^ ((uint64_t)(n - i) << 56));
    h->n += n;
    hash_word(h, h->n); /* where one part ends and the next begins */
}

static void hash_string(hash128 *h, const char *s) { hash_bytes(h, s ? s : "", s ? strlen(s) : 0); }

static void hash_final(const hash128 *h, uint64_t out[2])
{
    out[0] = mix64(h->a ^ mix64(h->b + h->n));
    out[1] = mix64(h->b ^ mix64(h->a - h->n));
}

/* ---- build IDs ------------------------------------------------------------------------------ */

typedef struct build_id {
    uintptr_t address;        /* find the object holding this address */
    unsigned char bytes[64];  /* its NT_GNU_BUILD_ID */
    size_t n;
} build_id;

static int find_build_id(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    build_id *id = arg;
    bool holds = false;
    for (int i = 0; i < info->dlpi_phnum && !holds; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        holds = ph->p_type == PT_LOAD && id->address >= lo && id->address < lo + ph->p_memsz;
    }
    if (!holds) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        size_t pad = ph->p_align == 8 ? 7 : 3; /* a segment of 8-aligned notes pads to 8 */
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const unsigned char *name = p + sizeof *nh;
            const unsigned char *desc = name + ((nh->n_namesz + pad) & ~pad);
            if (desc + nh->n_descsz > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
                nh->n_descsz > 0 && nh->n_descsz <= sizeof id->bytes) {
                memcpy(id->bytes, desc, nh->n_descsz);
                id->n = nh->n_descsz;
                return 1;
            }
            p = desc + ((nh->n_descsz + pad) & ~pad);
        }
    }
    return 1; /* the object holding the address has no build ID */
}

static uint64_t identity[2];
static bool identity_known;
static pthread_once_t identity_once = PTHREAD_ONCE_INIT;

static void identity_init(void)
{
    build_id kiln = {.address = (uintptr_t)&kiln_objcache_open};
    build_id llvm = {.address = (uintptr_t)&LLVMContextCreate};
    dl_iterate_phdr(find_build_id, &kiln);
    dl_iterate_phdr(find_build_id, &llvm);
    if (!kiln.n || !llvm.n) return;
    hash128 h;
    hash_init(&h);
    hash_bytes(&h, kiln.bytes, kiln.n);
    hash_bytes(&h, llvm.bytes, llvm.n);
    hash_final(&h, identity);
    identity_known = true;
}

/* ---- the directory ---------------------------------------------------------------------------- */

/* Creates dir and its missing parents (mode 0700); true when dir then is a directory. */
static bool make_dirs(const char *dir)
{
    char *p = strdup(dir);
    KILN_ASSERT(p != NULL);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) break;
        *s = '/';
    }
    bool ok = mkdir(p, 0700) == 0 || errno == EEXIST;
    free(p);
    return ok;
}

bool kiln_objcache_open(const char *dir, kiln_diags *d)
{
    free(cache_dir);
    cache_dir = NULL;
    if (!dir) return true;
    pthread_once(&identity_once, identity_init);
    if (!identity_known) {
        kiln_diags_add(d, NULL, 0, 0, "compile cache",
                       "kiln or libLLVM has no GNU build ID, which the cache's keys need: the cache is off");
        return false;
    }
    struct stat st;
    if (strlen(dir) > 3000) { /* entry_path's room */
        kiln_diags_add(d, NULL, 0, 0, "compile cache", "the directory's path is over 3000 bytes; the cache is off");
        return false;
    }
    if (!*dir || !make_dirs(dir)) {
        kiln_diags_add(d, NULL, 0, 0, "compile cache", "cannot create the directory '%s': %s; the cache is off",
                       dir, strerror(*dir ? errno : ENOENT));
        return false;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        kiln_diags_add(d, NULL, 0, 0, "compile cache", "'%s' is not a directory; the cache is off", dir);
        return false;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 022)) {
        kiln_diags_add(d, NULL, 0, 0, "compile cache",
                       "'%s' belongs to another user or others may write to it, and a cache entry is code "
                       "that kiln runs: the cache is off",
                       dir);
        return false;
    }
    cache_dir = strdup(dir);
    KILN_ASSERT(cache_dir != NULL);
    return true;
}

const char *kiln_objcache_dir(void) { return cache_dir; }

static void entry_path(const objcache_key *k, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%016llx%016llx.kobj", cache_dir, (unsigned long long)k->h[0],
             (unsigned long long)k->h[1]);
}

/* ---- keys, loads, stores ------------------------------------------------------------------- */

bool objcache_key_of(objcache_key *k, const kiln_target *t, LLVMModuleRef kernels, LLVMModuleRef gemm)
{
    memset(k, 0, sizeof *k);
    if (!cache_dir || !identity_known) return false;
    hash128 h;
    hash_init(&h);
    hash_bytes(&h, identity, sizeof identity);
    hash_string(&h, t->triple);
    hash_string(&h, t->cpu);
    hash_string(&h, t->features);
    LLVMModuleRef mods[OBJCACHE_OBJECTS] = {kernels, gemm};
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) {
        char *text = LLVMPrintModuleToString(mods[i]);
        hash_string(&h, text);
        LLVMDisposeMessage(text);
    }
    hash_final(&h, k->h);
    return true;
}

static uint64_t payload_hash(const void *const *data, const uint64_t *size)
{
    hash128 h;
    hash_init(&h);
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) hash_bytes(&h, data[i], size[i]);
    uint64_t out[2];
    hash_final(&h, out);
    return out[0];
}

/* Reads exactly n bytes at the file's position. */
static bool read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

bool objcache_load(const objcache_key *k, LLVMMemoryBufferRef obj[OBJCACHE_OBJECTS])
{
    char path[4096];
    entry_path(k, path, sizeof path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = false;
    void *data[OBJCACHE_OBJECTS] = {0};
    struct stat st;
    header hd;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || !read_all(fd, &hd, sizeof hd) ||
        memcmp(hd.magic, magic, sizeof magic) != 0 || hd.key[0] != k->h[0] || hd.key[1] != k->h[1])
        goto done;
    uint64_t total = sizeof hd;
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) {
        if (hd.size[i] == 0 || hd.size[i] > OBJCACHE_MAX_OBJECT) goto done;
        total += hd.size[i];
    }
    if (total != (uint64_t)st.st_size) goto done;
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) {
        data[i] = malloc(hd.size[i]);
        if (!data[i] || !read_all(fd, data[i], hd.size[i])) goto done;
    }
    if (payload_hash((const void *const *)data, hd.size) != hd.payload_hash) goto done;
    for (int i = 0; i < OBJCACHE_OBJECTS; i++)
        obj[i] = LLVMCreateMemoryBufferWithMemoryRangeCopy(data[i], hd.size[i], i ? "kiln-gemm" : "kiln-kernels");
    futimens(fd, NULL); /* recently used: the last to be pruned */
    ok = true;
done:
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) free(data[i]);
    close(fd);
    return ok;
}

typedef struct entry {
    char name[64];
    off_t size;
    struct timespec used;
} entry;

static int older_first(const void *a, const void *b)
{
    const struct timespec *x = &((const entry *)a)->used, *y = &((const entry *)b)->used;
    if (x->tv_sec != y->tv_sec) return x->tv_sec < y->tv_sec ? -1 : 1;
    return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

/* Past OBJCACHE_MAX_BYTES, deletes the least recently used entries down to half of it. */
static void prune(void)
{
    DIR *dir = opendir(cache_dir);
    if (!dir) return;
    entry *e = NULL;
    size_t n = 0, cap = 0;
    long long total = 0;
    for (struct dirent *de; (de = readdir(dir));) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (len != 37 || strcmp(de->d_name + 32, ".kobj") != 0) continue;
        if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            e = realloc(e, cap * sizeof *e);
            KILN_ASSERT(e != NULL);
        }
        memcpy(e[n].name, de->d_name, len + 1); /* 37 characters and the NUL */
        e[n].size = st.st_size;
        e[n].used = st.st_mtim;
        total += st.st_size;
        n++;
    }
    if (total > OBJCACHE_MAX_BYTES) {
        qsort(e, n, sizeof *e, older_first);
        for (size_t i = 0; i < n && total > OBJCACHE_MAX_BYTES / 2; i++)
            if (unlinkat(dirfd(dir), e[i].name, 0) == 0) total -= e[i].size;
    }
    free(e);
    closedir(dir);
}

void objcache_store(const objcache_key *k, LLVMMemoryBufferRef const obj[OBJCACHE_OBJECTS])
{
    header hd;
    memset(&hd, 0, sizeof hd);
    memcpy(hd.magic, magic, sizeof magic);
    hd.key[0] = k->h[0];
    hd.key[1] = k->h[1];
    const void *data[OBJCACHE_OBJECTS];
    for (int i = 0; i < OBJCACHE_OBJECTS; i++) {
        data[i] = LLVMGetBufferStart(obj[i]);
        hd.size[i] = LLVMGetBufferSize(obj[i]);
    }
    hd.payload_hash = payload_hash(data, hd.size);
    char path[4096];
    entry_path(k, path, sizeof path);
    kiln_atomic_file f;
    kiln_rt_error err;
    /* a cache that cannot be written is a cache that misses: never an error */
    if (kiln_atomic_begin(&f, path, &err) != 0) return;
    bool ok = kiln_atomic_write(&f, &hd, sizeof hd, &err) == 0;
    for (int i = 0; ok && i < OBJCACHE_OBJECTS; i++) ok = kiln_atomic_write(&f, data[i], hd.size[i], &err) == 0;
    if (ok && kiln_atomic_commit(&f, &err) == 0) prune();
}
