/* test_json_min.c — runtime/json_min.c, kiln's one JSON reader.
 *
 * Accepted texts give the right tree (kinds, keys in order, decoded strings, doubles and
 * exact int64s, byte offsets) without touching the text; refused texts give the first
 * problem with its line:column and a message a user can act on. Model-file wording is
 * also checked through the frontend (test_frontend.c) and headers through
 * test_safetensors.c; this file is the reader alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_min.h"

static void test_tree(void **state)
{
    const char text[] = "{\"a\": [1, -2.5e1, 9223372036854775807, 1e999],\n \"b\\u00e9\": \"x\\ny\\ud83d\\ude00\","
                        " \"c\": true, \"a\": null}";
    char copy[sizeof text];
    memcpy(copy, text, sizeof text);
    jm_doc doc;
    jm_error err;
    assert_int_equal(jm_parse(text, sizeof text - 1, 0, &doc, &err), 0);
    assert_memory_equal(text, copy, sizeof text); /* the text is only read */
    const jm_value *v = doc.v;
    assert_int_equal(v[0].kind, JM_OBJECT);
    assert_int_equal(v[0].count, 4);
    const jm_value *a = &v[v[0].first];
    assert_string_equal(a->key, "a");
    assert_int_equal(a->kind, JM_ARRAY);
    const jm_value *n0 = &v[a->first], *n1 = &v[n0->next], *n2 = &v[n1->next], *n3 = &v[n2->next];
    assert_true(n0->is_int && n0->num == 1 && n0->dbl == 1.0);
    assert_true(!n1->is_int && n1->dbl == -25.0);
    assert_true(n2->is_int && n2->num == INT64_MAX);
    assert_true(isinf(n3->dbl));
    assert_int_equal(n1->at, 10);
    const jm_value *b = &v[a->next];
    assert_string_equal(b->key, "b\xc3\xa9");
    assert_string_equal(b->str, "x\ny\xf0\x9f\x98\x80");
    const jm_value *c = &v[b->next];
    assert_true(c->kind == JM_BOOL && c->num == 1);
    const jm_value *dup = &v[c->next]; /* duplicate keys are kept: callers decide */
    assert_true(dup->kind == JM_NULL && strcmp(dup->key, "a") == 0 && dup->next == -1);
    jm_free(&doc);
}

/* text → the message must contain `want`, at line:col */
static void refused(const char *text, size_t len, int line, int col, const char *want)
{
    jm_doc doc;
    jm_error err;
    assert_int_not_equal(jm_parse(text, len, 0, &doc, &err), 0);
    if (!strstr(err.msg, want) || err.line != line || err.col != col)
        fail_msg("'%s': got %d:%d '%s', want %d:%d '%s'", text, err.line, err.col, err.msg, line, col, want);
    assert_null(doc.v);
}

#define REFUSED(text, line, col, want) refused(text, sizeof text - 1, line, col, want)

static void test_refusals(void **state)
{
    REFUSED("{\"a\": 1,}", 1, 9, "near '}'");
    REFUSED("[1, 2", 1, 6, "the '[' at 1:1 is never closed");
    REFUSED("{\"a\":\n \"xy", 2, 5, "the string opened at 2:2 is never closed");
    REFUSED("{'a': 1}", 1, 2, "JSON strings take double quotes");
    REFUSED("[01]", 1, 2, "leading zeros");
    REFUSED("[1.]", 1, 4, "digit after '.'");
    REFUSED("[NaN]", 1, 2, "near 'NaN]'");
    REFUSED("[\"a\tb\"]", 1, 4, "control character 0x09 inside a string");
    REFUSED("[\"a\nb\"]", 1, 2, "not closed on its line");
    REFUSED("[\"\\u0000\"]", 1, 3, "\\u0000 (NUL)");
    REFUSED("[\"\\ud800\"]", 1, 3, "surrogate");
    REFUSED("[\"\\x\"]", 1, 3, "invalid escape");
    REFUSED("[\"\xc0\x80\"]", 1, 3, "invalid UTF-8 (byte 0xc0)");
    REFUSED("[1] x", 1, 5, "unexpected text after the top-level value: 'x'");
    REFUSED("[1]\x01", 1, 4, "control character 0x01");
    REFUSED("", 1, 1, "unexpected end of file");
    REFUSED("[1 2]", 1, 4, "near '2]'");
    REFUSED("[\"\xc3\xa9\", x]", 1, 7, "near 'x]'"); /* columns count code points */
    /* NUL bytes inside the given length are data, and refused */
    refused("[1,\0 2]", 7, 1, 4, "control character 0x00");
}

static void test_limits(void **state)
{
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    jm_doc doc;
    jm_error err;
    assert_int_not_equal(jm_parse(deep, sizeof deep, 0, &doc, &err), 0);
    assert_non_null(strstr(err.msg, "deeper than 64"));
    assert_int_equal(err.col, 65);
    assert_int_equal(jm_parse(deep + 100 - 64, 128, 0, &doc, &err), 0); /* exactly 64 levels */
    jm_free(&doc);
    const char many[] = "[1,2,3,4,5]";
    assert_int_not_equal(jm_parse(many, sizeof many - 1, 5, &doc, &err), 0);
    assert_non_null(strstr(err.msg, "more than 5 JSON values"));
    assert_int_equal(jm_parse(many, sizeof many - 1, 6, &doc, &err), 0);
    jm_free(&doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
