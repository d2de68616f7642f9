/* atomic_file.c — temporary file, fsync, rename, fsync of the directory (see
 * atomic_file.h for the contract and the naming of temporaries). */
#define _FILE_OFFSET_BITS 64

#include "atomic_file.h"
#include "rt_error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The directory part of path ("." when there is none), malloc'd; NULL when out of memory. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* True when name is "<base>.tmp.<digits>.<digits>"; *pid gets the first number. */
static int is_temporary_of(const char *name, const char *base, long *pid)
{
    size_t b = strlen(base);
    if (strncmp(name, base, b) != 0 || strncmp(name + b, ".tmp.", 5) != 0) return 0;
    const char *p = name + b + 5;
    char *end;
    if (*p < '0' || *p > '9') return 0;
    errno = 0;
    *pid = strtol(p, &end, 10);
    if (errno || *end != '.' || end[1] < '0' || end[1] > '9') return 0;
    for (p = end + 1; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

int kiln_atomic_clean(const char *path)
{
    if (!path || !path[0]) return 0;
    char *dir = dir_of(path);
    if (!dir) return 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int removed = 0;
    DIR *d = opendir(dir);
    if (d) {
        int dfd = dirfd(d);
        struct dirent *e;
        long self = (long)getpid(), pid;
        while ((e = readdir(d)) != NULL) {
            if (!is_temporary_of(e->d_name, base, &pid)) continue;
            int dead = pid == self || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
            if (dead && unlinkat(dfd, e->d_name, 0) == 0) removed++;
        }
        closedir(d);
    }
    free(dir);
    return removed;
}

int kiln_atomic_begin(kiln_atomic_file *f, const char *path, kiln_rt_error *err)
{
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    f->fd = -1;
    f->path = f->tmp = NULL;
    if (!path || !path[0]) return kiln_rt_fail(err, "(no file name)", NULL, "empty file name");
    kiln_atomic_clean(path);

    static atomic_uint counter; /* keeps threads of one process apart */
    size_t cap = strlen(path) + 48;
    f->path = strdup(path);
    f->tmp = malloc(cap);
    if (!f->path || !f->tmp) {
        kiln_atomic_abort(f);
        return kiln_rt_fail(err, path, NULL, "out of memory");
    }
    for (int attempt = 0; attempt < 100 && f->fd < 0; attempt++) {
        snprintf(f->tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd < 0 && errno != EEXIST) break;
    }
    if (f->fd < 0) {
        int saved = errno;
        kiln_rt_fail(err, path, NULL, "cannot create temporary file '%s': %s", f->tmp, strerror(saved));
        free(f->tmp); /* nothing was created: nothing to unlink */
        f->tmp = NULL;
        kiln_atomic_abort(f);
        return -1;
    }
    return 0;
}

int kiln_atomic_write(kiln_atomic_file *f, const void *data, size_t n, kiln_rt_error *err)
{
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    if (f->fd < 0) return kiln_rt_fail(err, f->path ? f->path : "(no file)", NULL, "write to a file that is not open");
    const char *p = data;
    while (n > 0) {
        size_t step = n < (1u << 30) ? n : (1u << 30);
        ssize_t w = write(f->fd, p, step);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int saved = w < 0 ? errno : ENOSPC;
            kiln_rt_fail(err, f->path, NULL, "writing temporary file '%s' failed: %s", f->tmp, strerror(saved));
            kiln_atomic_abort(f);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory holding path, so that the rename itself survives a crash. */
static void sync_dir(const char *path)
{
    char *dir = dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int kiln_atomic_flush(kiln_atomic_file *f, kiln_rt_error *err)
{
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    if (f->fd < 0) return kiln_rt_fail(err, f->path ? f->path : "(no file)", NULL, "flush of a file that is not open");
    const char *failed = NULL;
    int saved = 0;
    if (fsync(f->fd) != 0) failed = "syncing", saved = errno;
    if (close(f->fd) != 0 && !failed) failed = "closing", saved = errno;
    f->fd = -1;
    if (failed) {
        kiln_rt_fail(err, f->path, NULL, "%s temporary file '%s' failed: %s", failed, f->tmp, strerror(saved));
        kiln_atomic_abort(f);
        return -1;
    }
    return 0;
}

int kiln_atomic_commit(kiln_atomic_file *f, kiln_rt_error *err)
{
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    if (!f->tmp) return kiln_rt_fail(err, f->path ? f->path : "(no file)", NULL, "commit of a file that is not open");
    if (f->fd >= 0 && kiln_atomic_flush(f, err)) return -1; /* else flushed already */
    const char *failed = NULL;
    int saved = 0;
    if (rename(f->tmp, f->path) != 0) failed = "renaming", saved = errno;
    if (failed) {
        kiln_rt_fail(err, f->path, NULL, "%s temporary file '%s' failed: %s", failed, f->tmp, strerror(saved));
        kiln_atomic_abort(f);
        return -1;
    }
    sync_dir(f->path);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
    return 0;
}

void kiln_atomic_abort(kiln_atomic_file *f)
{
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    f->fd = -1;
    f->tmp = f->path = NULL;
}

int kiln_atomic_write_file(const char *path, const void *data, size_t n, kiln_rt_error *err)
{
    kiln_atomic_file f;
    if (kiln_atomic_begin(&f, path, err)) return -1;
    if (kiln_atomic_write(&f, data, n, err)) return -1;
    return kiln_atomic_commit(&f, err);
}
