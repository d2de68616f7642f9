/* test_locate.c — frontend/locate.c: JSON paths to line:column in a model file's text.
 * Keys point at their opening quote, array elements at their first character; values
 * skipped on the way may hold brackets and escaped quotes inside strings; a path the
 * text does not have gives false; columns count UTF-8 characters, not bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "locate.h"

static void expect_at(const char *text, const char *path, int line, int col)
{
    int l = 0, c = 0;
    if (!fe_locate(text, strlen(text), path, &l, &c)) fail_msg("%s: not found", path);
    if (l != line || c != col) fail_msg("%s: got %d:%d, want %d:%d", path, l, c, line, col);
}

static void expect_none(const char *text, const char *path)
{
    int l = 0, c = 0;
    if (fe_locate(text, strlen(text), path, &l, &c)) fail_msg("%s: found at %d:%d", path, l, c);
}

static void test_paths(void **state)
{
    (void)state;
    const char *t = "{\n"
                    "  \"name\": \"a \\\"[{\\\" b\",\n"
                    "  \"dims\": {\"N\": 4, \"T\": [1, {\"x\": 2}]},\n"
                    "  \"layers\": [\n"
                    "    {\"name\": \"é\", \"op\": \"linear\", \"casual\": true},\n"
                    "    [\"in\", {\"deep\": [[[]]]}], {\"op\": \"relu\"}\n"
                    "  ]\n"
                    "}\n";
    expect_at(t, "name", 2, 3);
    expect_at(t, "dims.T", 3, 20);
    expect_at(t, "dims.T[1].x", 3, 30);
    expect_at(t, "layers[0]", 5, 5);
    expect_at(t, "layers[0].casual", 5, 35); /* é is one column */
    expect_at(t, "layers[2].op", 6, 32);
    expect_none(t, "layers[3]");
    expect_none(t, "dims.M");
    expect_none(t, "name.x");
    expect_none(t, "");
    expect_none("{\"a\": [1, 2", "a[5]");
    expect_none("not json", "a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_paths)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
