/* rt_error.c — kiln_rt_fail (rt_error.h): the runtime's error messages, formatted once. */
#include "rt_error.h"

#include <stdarg.h>
#include <stdio.h>

int kiln_rt_fail(kiln_rt_error *err, const char *path, const char *tensor, const char *fmt, ...)
{
    size_t cap = sizeof err->msg;
    int k = tensor ? snprintf(err->msg, cap, "%s: tensor '%s': ", path, tensor) : snprintf(err->msg, cap, "%s: ", path);
    if (k >= 0 && (size_t)k < cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg + k, cap - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}
