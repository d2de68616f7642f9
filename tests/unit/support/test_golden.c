/* test_golden.c — golden text files (see test_golden.h). */
#include "test_golden.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

char *golden_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    return buf;
}

int golden_check(const char *expected_path, const char *got)
{
    const char *update = getenv("KILN_UPDATE_GOLDEN");
    if (update && !strcmp(update, "1")) {
        FILE *f = fopen(expected_path, "wb");
        assert_non_null(f);
        fputs(got, f);
        fclose(f);
        print_message("updated %s\n", expected_path);
        return 0;
    }
    char *want = golden_read_file(expected_path);
    int mismatch = 0;
    if (!want) {
        print_error("missing %s (KILN_UPDATE_GOLDEN=1 to create it)\n", expected_path);
        mismatch = 1;
    } else if (strcmp(want, got)) {
        print_error("golden mismatch: %s (KILN_UPDATE_GOLDEN=1 to accept)\n--- expected\n%s--- got\n%s", expected_path,
                    want, got);
        mismatch = 1;
    }
    free(want);
    return mismatch;
}
