/* fuzz.h — what every fuzz target shares (see fuzz/README.md).
 *
 * A target is one function, LLVMFuzzerTestOneInput, linked either with libFuzzer
 * (-fsanitize=fuzzer: the fuzzing build, KILN_FUZZ=ON) or with replay.c (every other
 * build: runs the target once over each file named on the command line, so the seed
 * corpus and the regression inputs are part of the normal test suite).
 *
 * Readers that take a path (safetensors, data files) get the input as a real file in a
 * per-process scratch directory (in /dev/shm when it exists: no disk traffic), so the
 * fuzzer drives exactly the code users run, fstat and short reads included.
 *
 * FUZZ_CHECK is for the properties a target asserts beyond "no crash": a failure
 * prints the condition and aborts, which libFuzzer records as a finding.
 */
#ifndef KILN_FUZZ_H
#define KILN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes data[0..size) to the scratch file `name` (a plain file name) and returns its
 * path (a static buffer, valid until the next call). */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);

/* A malloc'd NUL-terminated copy of data[0..size). */
char *fuzz_text(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

#endif
