/* test_params.c — kiln_params_load, the non-allocating loader behind exported NAME_load.
 *
 * Design: files are built byte by byte (write_st: a header string and raw data) so
 * every conversion is checked against known bit patterns and every hostile shape of a
 * header can be written down. A small two-parameter table stands in for a model. The
 * last test mutates a valid file at every header byte and truncates it at every length:
 * the loader must return a status (never crash or read out of bounds — the suite also
 * runs under ASan+UBSan).
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
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/params.h"

static char g_path[64];

static int setup(void **state)
{
    strcpy(g_path, "/tmp/kiln_params_XXXXXX");
    int fd = mkstemp(g_path);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(g_path);
    return 0;
}

/* Writes a safetensors file: the 8-byte length, `header`, then `size` data bytes. */
static void write_st(const char *header, const void *data, size_t size)
{
    FILE *f = fopen(g_path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(header);
    unsigned char len[8];
    for (int k = 0; k < 8; k++) len[k] = (unsigned char)(n >> 8 * k);
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, n, f), n);
    if (size) assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* The stand-in model: a f32[2,3] at 0 and b.w f32[4] at 64. */
static const kiln_param_info TABLE[2] = {
    {"a", 0, 2, {2, 3}},
    {"b.w", 64, 1, {4}},
};

static float g_blob[32];

static int load(void)
{
    unsigned char seen[2];
    for (int i = 0; i < 32; i++) g_blob[i] = -999.0f;
    return kiln_params_load(g_blob, g_path, TABLE, 2, seen);
}

/* f32 data of a (6 values) then b.w (4 values). */
static const float DATA[10] = {1, 2, 3, 4, 5, 6, 0.5f, -0.25f, 1e30f, -7};

#define GOOD_HEADER                                                                                      \
    "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"{[\\\"]\"},"                                           \
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"                                 \
    "\"extra\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,24]},"                               \
    " \"b.w\" : { \"data_offsets\" : [ 24 , 40 ] , \"shape\" : [ 4 ] , \"dtype\" : \"F32\" } }    "

static void test_f32(void **state)
{
    write_st(GOOD_HEADER, DATA, sizeof DATA);
    assert_int_equal(load(), KILN_LOAD_OK);
    for (int i = 0; i < 6; i++) assert_true(g_blob[i] == DATA[i]);
    for (int i = 0; i < 4; i++) assert_true(g_blob[16 + i] == DATA[6 + i]);
    assert_true(g_blob[6] == -999.0f); /* padding between parameters untouched */
}

static void test_conversions(void **state)
{
    /* a: F16 1, -2, 2^-24, inf, -0, 65504; b.w: BF16 1, -3, then F64 would not fit: use BF16 */
    uint16_t half[6] = {0x3C00, 0xC000, 0x0001, 0x7C00, 0x8000, 0x7BFF};
    uint16_t bf[4] = {0x3F80, 0xC040, 0x0000, 0x7FC0};
    unsigned char data[20];
    memcpy(data, half, 12); /* little-endian host */
    memcpy(data + 12, bf, 8);
    write_st("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
             "\"b\\u002ew\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
             data, sizeof data);
    assert_int_equal(load(), KILN_LOAD_OK);
    assert_true(g_blob[0] == 1.0f && g_blob[1] == -2.0f && g_blob[2] == 0x1p-24f);
    assert_true(isinf(g_blob[3]) && g_blob[3] > 0);
    assert_true(g_blob[4] == 0.0f && signbit(g_blob[4]));
    assert_true(g_blob[5] == 65504.0f);
    assert_true(g_blob[16] == 1.0f && g_blob[17] == -3.0f && g_blob[18] == 0.0f && isnan(g_blob[19]));

    double d[10] = {1.5, -2, 3, 4, 5, 6, 1e-3, 0, -1, 2};
    write_st("{\"a\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[0,48]},"
             "\"b.w\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[48,80]}}",
             d, sizeof d);
    assert_int_equal(load(), KILN_LOAD_OK);
    assert_true(g_blob[0] == 1.5f && g_blob[16] == (float)1e-3 && g_blob[19] == 2.0f);
    d[3] = 1e300; /* finite but not an f32 */
    write_st("{\"a\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[0,48]},"
             "\"b.w\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[48,80]}}",
             d, sizeof d);
    assert_int_equal(load(), KILN_LOAD_DTYPE);
}

/* A long tensor in each dtype that needs converting: the loader converts in place, in
 * the parameter's own bytes (F64 in rounds of half of what is left), so every element
 * is checked, and the floats after the parameter must stay untouched. */
static void test_long_conversions(void **state)
{
    enum { N = 1027 }; /* odd: F64's rounds end with a single element */
    static const kiln_param_info one[1] = {{"t", 0, 1, {N}}};
    static float blob[N + 16];
    static unsigned char data[N * 8];
    const char *dtypes[3] = {"F16", "BF16", "F64"};
    for (int k = 0; k < 3; k++) {
        int size = k == 2 ? 8 : 2;
        for (int i = 0; i < N; i++) {
            float want = (float)(i % 200) - 100.0f; /* exact in f16 and bf16 */
            if (k == 0) {                           /* f16 of an integer below 2048 */
                uint16_t h = 0;
                float a = fabsf(want);
                if (a != 0) {
                    int e = ilogbf(a);
                    h = (uint16_t)((e + 15) << 10 | (uint16_t)((a / ldexpf(1, e) - 1) * 1024));
                }
                if (want < 0) h |= 0x8000;
                memcpy(data + 2 * i, &h, 2);
            } else if (k == 1) {
                uint32_t u;
                memcpy(&u, &want, 4);
                uint16_t b = (uint16_t)(u >> 16);
                memcpy(data + 2 * i, &b, 2);
            } else {
                double d = want;
                memcpy(data + 8 * i, &d, 8);
            }
        }
        char header[160];
        snprintf(header, sizeof header, "{\"t\":{\"dtype\":\"%s\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", dtypes[k],
                 N, N * size);
        write_st(header, data, (size_t)N * (size_t)size);
        for (int i = 0; i < N + 16; i++) blob[i] = -999.0f;
        unsigned char seen[1];
        assert_int_equal(kiln_params_load(blob, g_path, one, 1, seen), KILN_LOAD_OK);
        for (int i = 0; i < N; i++)
            if (blob[i] != (float)(i % 200) - 100.0f) fail_msg("%s element %d: %g", dtypes[k], i, blob[i]);
        for (int i = N; i < N + 16; i++) assert_true(blob[i] == -999.0f);
    }
}

/* Each header with DATA must fail with `want`. */
static void expect(const char *header, int want)
{
    write_st(header, DATA, sizeof DATA);
    int rc = load();
    if (rc != want) fail_msg("header %s: got %d, expected %d", header, rc, want);
}

#define A_OK "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B_OK "\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}"

static void test_refusals(void **state)
{
    expect("{" A_OK "}", KILN_LOAD_MISSING);
    expect("{}", KILN_LOAD_MISSING);
    expect("{" A_OK "," A_OK "," B_OK "}", KILN_LOAD_FORMAT); /* a name twice */
    /* ... even when the first one has the wrong shape: the header is checked first */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[40,40]}," A_OK "," B_OK "}",
           KILN_LOAD_FORMAT);
    /* tensors sharing bytes, as kiln's reader refuses them: two parameters, an extra
     * tensor over a parameter; an extra tensor past the data section */
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[20,28]}," B_OK "}",
           KILN_LOAD_FORMAT);
    expect("{" A_OK "," B_OK ",\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[40,48]}}",
           KILN_LOAD_FORMAT);
    /* overlaps between two extra tensors are not looked for (that would take memory in
     * proportion to the file): harmless, and documented */
    float more[14] = {0};
    memcpy(more, DATA, sizeof DATA);
    write_st("{" A_OK "," B_OK ",\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[40,48]},"
             "\"y\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[44,56]}}",
             more, sizeof more);
    assert_int_equal(load(), KILN_LOAD_OK);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[24,40]}}", KILN_LOAD_SHAPE);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]}}", KILN_LOAD_SHAPE);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,4],\"data_offsets\":[24,40]}}",
           KILN_LOAD_SHAPE);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[24,40]}}", KILN_LOAD_DTYPE);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,44]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[28,44]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[40,24]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[24,40]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[24,40]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4]}}", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b.w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,99999999999999999999999]}}",
           KILN_LOAD_FORMAT);
    expect("{" A_OK "," B_OK "} x", KILN_LOAD_FORMAT);      /* trailing garbage */
    expect("{" A_OK "," B_OK, KILN_LOAD_FORMAT);            /* unterminated */
    expect("[" A_OK "," B_OK "]", KILN_LOAD_FORMAT);
    expect("{" A_OK ",\"b\\x\":{}," B_OK "}", KILN_LOAD_FORMAT);   /* bad escape */
    expect("{" A_OK ",\"\\udc00\":{}," B_OK "}", KILN_LOAD_FORMAT); /* lone low surrogate */
    expect("{" A_OK ",\"b\nw\":{}," B_OK "}", KILN_LOAD_FORMAT);    /* raw control character */
    expect("{\"__metadata__\":[[[]]," A_OK "," B_OK "}", KILN_LOAD_FORMAT); /* never closed */
    /* skipped values are only bracket-counted, not validated: harmless, and documented */
    expect("{\"__metadata__\":[[[}]]," A_OK "," B_OK "}", KILN_LOAD_OK);

    /* a name longer than the loader compares matches nothing, and costs nothing */
    char big[3 * KILN_PARAMS_MAX_NAME];
    memset(big, 'z', sizeof big);
    big[sizeof big - 1] = '\0';
    char header[4 * KILN_PARAMS_MAX_NAME];
    snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[40,40]}," A_OK "," B_OK "}", big);
    expect(header, KILN_LOAD_OK);

    /* deep nesting in skipped values: no recursion, so no stack to exhaust */
    size_t depth = 200000;
    char *deep = malloc(2 * depth + 200);
    assert_non_null(deep);
    size_t n = (size_t)sprintf(deep, "{\"__metadata__\":");
    memset(deep + n, '[', depth);
    memset(deep + n + depth, ']', depth);
    sprintf(deep + n + 2 * depth, "," A_OK "," B_OK "}");
    expect(deep, KILN_LOAD_OK);
    free(deep);

    /* the file itself */
    unsigned char seen[2];
    assert_int_equal(kiln_params_load(g_blob, "/nonexistent/w.safetensors", TABLE, 2, seen), KILN_LOAD_IO);
    assert_int_equal(kiln_params_load(g_blob, "/tmp", TABLE, 2, seen), KILN_LOAD_IO);
    /* a FIFO without a writer: refused at once, not a wait in open() (the alarm turns a
     * hang into a failure) */
    char fifo[80];
    snprintf(fifo, sizeof fifo, "%s.fifo", g_path);
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    assert_int_equal(kiln_params_load(g_blob, fifo, TABLE, 2, seen), KILN_LOAD_IO);
    alarm(0);
    unlink(fifo);
    FILE *f = fopen(g_path, "wb");
    fclose(f);
    assert_int_equal(load(), KILN_LOAD_FORMAT); /* empty */
    f = fopen(g_path, "wb");
    fwrite("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 1, 10, f); /* header length past the end */
    fclose(f);
    assert_int_equal(load(), KILN_LOAD_FORMAT);
}

/* Every single-byte change of a good header and every truncation returns some status. */
static void test_mutations(void **state)
{
    const char *header = GOOD_HEADER;
    size_t hn = strlen(header), total = 8 + hn + sizeof DATA;
    unsigned char *file = malloc(total);
    assert_non_null(file);
    for (int k = 0; k < 8; k++) file[k] = (unsigned char)((uint64_t)hn >> 8 * k);
    memcpy(file + 8, header, hn);
    memcpy(file + 8 + hn, DATA, sizeof DATA);
    static const unsigned char subst[] = {'{', '}', '[', ']', '"', '\\', ',', ':', '0', '9', ' ', 0, 0xff, 'u'};
    for (size_t at = 0; at < 8 + hn; at++) {
        for (size_t s = 0; s < sizeof subst; s++) {
            unsigned char keep = file[at];
            file[at] = subst[s];
            FILE *f = fopen(g_path, "wb");
            fwrite(file, 1, total, f);
            fclose(f);
            int rc = load();
            assert_true(rc >= KILN_LOAD_OK && rc <= KILN_LOAD_DTYPE);
            file[at] = keep;
        }
    }
    for (size_t len = 0; len < total; len++) {
        FILE *f = fopen(g_path, "wb");
        fwrite(file, 1, len, f);
        fclose(f);
        assert_int_not_equal(load(), KILN_LOAD_OK);
    }
    free(file);
}

/* More parameters than one walk compares at once (64): an overlap between the first and
 * the last is found, a name twice after the first block too, and a good file loads. */
static void test_many(void **state)
{
    enum { N = 150 };
    static kiln_param_info table[N];
    static char names[N][8];
    static float blob[16 * N], data[N];
    static char header[N * 80 + 200];
    unsigned char seen[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "p%d", i);
        table[i] = (kiln_param_info){names[i], (size_t)64 * i, 1, {1}};
        data[i] = (float)i;
    }
    for (int variant = 0; variant < 3; variant++) {
        size_t at = (size_t)sprintf(header, "{");
        for (int i = 0; i < N; i++) {
            int begin = 4 * i, end = 4 * i + 4;
            if (variant == 1 && i == N - 1) begin = 0, end = 4; /* p149 over p0 */
            at += (size_t)sprintf(header + at, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                                  i ? "," : "", variant == 2 && i == N - 1 ? "p100" : names[i], begin, end);
        }
        sprintf(header + at, "}");
        write_st(header, data, sizeof data);
        int rc = kiln_params_load(blob, g_path, table, N, seen);
        assert_int_equal(rc, variant == 0 ? KILN_LOAD_OK : KILN_LOAD_FORMAT);
        if (variant == 0)
            for (int i = 0; i < N; i++) assert_true(blob[16 * i] == (float)i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_long_conversions),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
