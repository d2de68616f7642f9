/* locate.h — a JSON path's line:column in a model file's text (locate.c). */
#ifndef KILN_FE_LOCATE_H
#define KILN_FE_LOCATE_H

#include <stdbool.h>
#include <stddef.h>

/* The 1-based line and column where `path` ("layers[3].heads") is in the JSON text: a
 * key's opening quote, or an array element's first character. false when the text has
 * no such path. */
bool fe_locate(const char *text, size_t len, const char *path, int *line, int *col);

#endif
