/* open_regular.c — kiln_open_regular: open a file to read that must be a regular file.
 *
 * Model files and data files come from users' command lines, where /dev/zero, a FIFO
 * or a terminal may stand: one never ends, one waits for a writer, one is read once. So
 * the file is opened with O_NONBLOCK (opening a FIFO must not wait for a writer), checked
 * with fstat, and only then set back to blocking reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/runtime.h"

int kiln_open_regular(const char *path, struct stat *st) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -2;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}
