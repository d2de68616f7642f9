/* crash_shim.c — an LD_PRELOAD library for tests/cli/test_crash_safety.sh: it slows down
 * or fails kiln's writes of checkpoint temporaries (files whose path contains ".tmp."),
 * so that kills land inside a save and disk-full and permission errors can be had
 * without a full disk or another user. kiln itself has no test hooks; everything else
 * passes through untouched. Settings, from the environment:
 *
 *   KILN_SHIM_WRITE_US=U     every write(2) to a temporary writes at most 4 KiB and
 *                            first sleeps U µs (a slow disk: torn temporaries to kill)
 *   KILN_SHIM_FSYNC_MS=M     fsync(2) of a temporary sleeps M ms first (the window
 *                            between a complete temporary and its rename)
 *   KILN_SHIM_ENOSPC_AFTER=N a temporary takes N bytes, then write(2) fails with ENOSPC
 *   KILN_SHIM_EACCES=1       creating a temporary fails with EACCES
 *
 * Built by the test with `cc -shared -fPIC`; test-only, never linked into kiln. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FD = 4096 };
static long long written[MAX_FD]; /* bytes written to the temporary open on each fd */

static long env_long(const char *name)
{
    const char *v = getenv(name);
    return v ? atol(v) : 0;
}

static int is_temporary_path(const char *path) { return path && strstr(path, ".tmp.") != NULL; }

static int is_temporary_fd(int fd)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    return is_temporary_path(target);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int opened(int fd, const char *path)
{
    if (fd >= 0 && fd < MAX_FD && is_temporary_path(path)) written[fd] = 0;
    return fd;
}

/* Creating a temporary is refused under KILN_SHIM_EACCES. */
static int refused(const char *path, int flags)
{
    if (!env_long("KILN_SHIM_EACCES") || !is_temporary_path(path) || !(flags & O_CREAT)) return 0;
    errno = EACCES;
    return 1;
}

/* open's mode argument is there only with O_CREAT or O_TMPFILE. */
#define MODE_ARG(flags, mode)                                                                                        \
    do {                                                                                                             \
        if ((flags) & (O_CREAT | O_TMPFILE)) {                                                                       \
            va_list ap;                                                                                              \
            va_start(ap, flags);                                                                                     \
            mode = va_arg(ap, mode_t);                                                                               \
            va_end(ap);                                                                                              \
        }                                                                                                            \
    } while (0)

typedef int open_fn(const char *, int, ...);
typedef int openat_fn(int, const char *, int, ...);

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    static open_fn *real;
    if (!real) real = (open_fn *)dlsym(RTLD_NEXT, "open");
    return refused(path, flags) ? -1 : opened(real(path, flags, mode), path);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    static open_fn *real;
    if (!real) real = (open_fn *)dlsym(RTLD_NEXT, "open64");
    return refused(path, flags) ? -1 : opened(real(path, flags, mode), path);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    static openat_fn *real;
    if (!real) real = (openat_fn *)dlsym(RTLD_NEXT, "openat");
    return refused(path, flags) ? -1 : opened(real(dirfd, path, flags, mode), path);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    static openat_fn *real;
    if (!real) real = (openat_fn *)dlsym(RTLD_NEXT, "openat64");
    return refused(path, flags) ? -1 : opened(real(dirfd, path, flags, mode), path);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (fd < 3 || fd >= MAX_FD || !is_temporary_fd(fd)) return real(fd, buf, n);
    long us = env_long("KILN_SHIM_WRITE_US");
    if (us > 0) {
        sleep_us(us);
        if (n > 4096) n = 4096;
    }
    const char *limit = getenv("KILN_SHIM_ENOSPC_AFTER");
    if (limit) {
        long long room = atoll(limit) - written[fd];
        if (room <= 0) {
            errno = ENOSPC;
            return -1;
        }
        if ((long long)n > room) n = (size_t)room;
    }
    ssize_t w = real(fd, buf, n);
    if (w > 0) written[fd] += w;
    return w;
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    long ms = env_long("KILN_SHIM_FSYNC_MS");
    if (ms > 0 && is_temporary_fd(fd)) sleep_us(ms * 1000);
    return real(fd);
}
