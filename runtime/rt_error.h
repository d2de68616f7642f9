/* rt_error.h — private to runtime/: the one way its file functions fill a kiln_rt_error,
 * so that every message reads "path: [tensor 'name': ]what went wrong". */
#ifndef KILN_RT_ERROR_H
#define KILN_RT_ERROR_H

#include "kiln/runtime.h"

/* Formats "path: [tensor 'tensor': ]message" into err (no tensor part when tensor is
 * NULL) and returns -1, so that every failure site is one `return kiln_rt_fail(...)`. */
int kiln_rt_fail(kiln_rt_error *err, const char *path, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
