/* atomic_file.h — writing a file so that readers see the old content or the new, never
 * a mix, whatever happens in between (crash, kill -9, full disk, power loss).
 *
 * Every file kiln writes goes through here: safetensors weights and checkpoints
 * (safetensors.c), exported headers and C sources (codegen/aot.c), plots. The steps:
 *   begin:  remove stale temporaries of `path` left by a killed writer, then create a
 *           new temporary beside it, "<path>.tmp.<pid>.<n>" (same directory, hence same
 *           file system, so the rename is atomic; O_EXCL, so nobody else's file is
 *           reused; mode 0666 filtered by the umask, as for any new file);
 *   write:  any number of times, retrying short writes and EINTR;
 *   commit: fsync the data, close, rename over `path`, fsync the directory so the new
 *           name is durable too (best effort: some file systems refuse it);
 *   abort:  close and unlink the temporary; `path` is untouched.
 * A failing write or commit aborts by itself, so after any error the caller has
 * nothing to clean up; abort after a failure (or twice) is harmless.
 *
 * Stale temporaries: a writer killed between begin and commit leaves "<path>.tmp.P.N".
 * begin (and kiln_atomic_clean) deletes those whose process P no longer exists, or is
 * the caller itself (a process writes one version of a path at a time, so a temporary
 * with its own pid is a leftover from a previous process that had the same pid).
 *
 * libc only (runtime rule); errors are kiln_rt_error messages starting with the path.
 */
#ifndef KILN_ATOMIC_FILE_H
#define KILN_ATOMIC_FILE_H

#include <stddef.h>

#include "kiln/runtime.h"

typedef struct kiln_atomic_file {
    int fd;     /* the temporary, open for writing; -1 when not in progress */
    char *path; /* the target (a copy) */
    char *tmp;  /* the temporary's name */
} kiln_atomic_file;

/* Starts writing `path`. Returns 0, or -1 with err filled (and *f inert). */
int kiln_atomic_begin(kiln_atomic_file *f, const char *path, kiln_rt_error *err);

/* Appends n bytes. Returns 0, or -1 with err filled after aborting. */
int kiln_atomic_write(kiln_atomic_file *f, const void *data, size_t n, kiln_rt_error *err);

/* The first half of commit: fsync and close the temporary, so that only the rename is
 * left (a caller committing two files together flushes both before renaming either).
 * Returns 0, or -1 with err filled after aborting. */
int kiln_atomic_flush(kiln_atomic_file *f, kiln_rt_error *err);

/* Makes the written bytes the content of path (flushing them first unless done). Returns 0, or -1 with err filled after
 * aborting (path keeps its previous content). */
int kiln_atomic_commit(kiln_atomic_file *f, kiln_rt_error *err);

/* Drops the temporary; path keeps its previous content. Safe on an inert file. */
void kiln_atomic_abort(kiln_atomic_file *f);

/* begin + write + commit of one buffer. */
int kiln_atomic_write_file(const char *path, const void *data, size_t n, kiln_rt_error *err);

/* Deletes the stale temporaries of path (see above); returns how many. Never fails:
 * a directory that cannot be read just has nothing cleaned. */
int kiln_atomic_clean(const char *path);

#endif
