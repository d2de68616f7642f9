/* test_safetensors.c — the runtime's safetensors reader/writer and aligned allocation.
 *
 * Design: every test works in one fresh temporary directory (made in the group setup,
 * emptied and removed in the teardown). Valid files come from the writer or are built
 * byte by byte (write_file: a header string plus raw data), so conversions are checked
 * against known bit patterns. Hostile files go through expect_error, which checks the
 * whole failure contract: non-zero return, a message naming the file and the expected
 * problem, and an output left empty. The suite also runs under ASan+UBSan, which turns
 * any out-of-bounds read or leak on these paths into a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/runtime.h"

static char g_dir[64];

static int setup_dir(void **state) {
    strcpy(g_dir, "/tmp/kiln_st_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
        closedir(d);
    }
    return rmdir(g_dir);
}

/* A path inside the test directory (static buffer per call site is enough here). */
static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

/* Number of directory entries whose name contains ".tmp.". */
static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A safetensors file by hand: the length prefix, header text as given, then data. */
static void write_file(const char *path, const char *header, const void *data, size_t data_len) {
    size_t hn = strlen(header);
    unsigned char *buf = malloc(8 + hn + data_len + 1);
    for (int k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)hn >> 8 * k);
    memcpy(buf + 8, header, hn);
    if (data_len) memcpy(buf + 8 + hn, data, data_len);
    write_bytes(path, buf, 8 + hn + data_len);
    free(buf);
}

static int is_empty(const kiln_tensor_file *f) {
    return !f->tensors && !f->meta_keys && !f->meta_values && f->n == 0 && f->n_meta == 0;
}

/* The failure contract for hostile input. */
static void expect_read_fails(const char *path, const char *needle) {
    kiln_tensor_file f;
    kiln_rt_error err;
    memset(&f, 0x5A, sizeof f); /* garbage in: the reader must reset it */
    int rc = kiln_tensor_file_read(path, &f, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        print_error("rc=%d, message '%s', expected to contain '%s'\n", rc, err.msg, needle);
    assert_int_not_equal(rc, 0);
    assert_true(strlen(err.msg) > 0);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, needle));
    assert_true(is_empty(&f));
    kiln_tensor_file_free(&f); /* harmless on an empty file */
}

static void expect_error(const char *header, const void *data, size_t data_len,
                         const char *needle) {
    const char *path = tmp_path("bad.safetensors");
    write_file(path, header, data, data_len);
    expect_read_fails(path, needle);
}

static void read_ok(const char *path, kiln_tensor_file *f) {
    kiln_rt_error err;
    int rc = kiln_tensor_file_read(path, f, &err);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
}

static kiln_tensor make_tensor(const char *name, kiln_dtype dt, int rank, const int64_t *shape,
                               void *data) {
    kiln_tensor t = {.name = (char *)name, .dtype = dt, .rank = rank, .data = data};
    for (int d = 0; d < rank && d < KILN_MAX_RANK; d++)
        t.shape[d] = shape[d]; /* rank may be bad on purpose */
    return t;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- aligned allocation -------------------------------------------------------------- */

static void test_aligned_alloc(void **state) {
    size_t sizes[] = {0, 1, 63, 64, 65, 1000, 1 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned char *p = kiln_aligned_alloc(sizes[k]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        size_t usable = sizes[k] ? (sizes[k] + 63) / 64 * 64 : 64;
        for (size_t i = 0; i < usable; i++) assert_int_equal(p[i], 0);
        kiln_aligned_free(p);
    }
    assert_null(kiln_aligned_alloc(SIZE_MAX));
    assert_null(kiln_aligned_alloc(SIZE_MAX - 10));
    kiln_aligned_free(NULL);
}

/* ---- round trips ---------------------------------------------------------------------- */

static void test_roundtrip_f32_with_metadata(void **state) {
    const char *path = tmp_path("a.safetensors");
    float w[6] = {1.5f, -2.25f, 0.0f, 1e-30f, 3.4e38f, -0.0f};
    int64_t shape[] = {2, 3};
    kiln_tensor t = make_tensor("layer.weight", KILN_F32, 2, shape, w);
    const char *keys[] = {"step", "model"};
    const char *vals[] = {"42", "{\"dims\": 3}"};
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, &t, 1, keys, vals, 2, &err), 0);

    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.tensors[0].name, "layer.weight");
    assert_int_equal(f.tensors[0].dtype, KILN_F32);
    assert_int_equal(f.tensors[0].rank, 2);
    assert_int_equal(f.tensors[0].shape[0], 2);
    assert_int_equal(f.tensors[0].shape[1], 3);
    assert_int_equal(kiln_tensor_numel(&f.tensors[0]), 6);
    assert_int_equal((uintptr_t)f.tensors[0].data % 64, 0);
    assert_memory_equal(f.tensors[0].data, w, sizeof w);
    assert_int_equal(f.n_meta, 2);
    assert_string_equal(kiln_tensor_file_meta(&f, "step"), "42");
    assert_string_equal(kiln_tensor_file_meta(&f, "model"), "{\"dims\": 3}");
    assert_null(kiln_tensor_file_meta(&f, "missing"));
    assert_ptr_equal(kiln_tensor_file_find(&f, "layer.weight"), &f.tensors[0]);
    assert_null(kiln_tensor_file_find(&f, "layer.bias"));
    kiln_tensor_file_free(&f);
    assert_true(is_empty(&f));
    kiln_tensor_file_free(&f); /* twice is harmless */
}

static void test_roundtrip_i32_order_and_many(void **state) {
    const char *path = tmp_path("b.safetensors");
    enum { N = 40 };
    kiln_tensor ts[N];
    char names[N][16];
    int32_t data[N][5];
    for (int k = 0; k < N; k++) {
        snprintf(names[k], sizeof names[k], "t%02d", N - 1 - k); /* not sorted by name */
        for (int j = 0; j < 5; j++)
            data[k][j] = (k % 2 ? -1 : 1) * (k * 1000 + j) + (j == 4 ? INT32_MIN / 2 : 0);
        int64_t shape[] = {5};
        ts[k] = make_tensor(names[k], KILN_I32, 1, shape, data[k]);
    }
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, ts, N, NULL, NULL, 0, &err), 0);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, N);
    assert_int_equal(f.n_meta, 0);
    for (int k = 0; k < N; k++) {
        assert_string_equal(f.tensors[k].name, names[k]); /* order kept */
        for (int d = 1; d < KILN_MAX_RANK; d++) assert_int_equal(f.tensors[k].shape[d], 0);
        assert_int_equal(f.tensors[k].dtype, KILN_I32);
        assert_memory_equal(f.tensors[k].data, data[k], sizeof data[k]);
        assert_int_equal((uintptr_t)f.tensors[k].data % 64, 0);
    }
    kiln_tensor_file_free(&f);
}

static void test_roundtrip_scalar_and_empty(void **state) {
    const char *path = tmp_path("c.safetensors");
    float s = 7.0f;
    int64_t zero[] = {0}, three_zero[] = {3, 0}, big_zero[] = {0, 1000000000, 1000000000};
    kiln_tensor ts[4] = {
        make_tensor("scalar", KILN_F32, 0, NULL, &s),
        make_tensor("empty", KILN_F32, 1, zero, NULL),
        make_tensor("empty2", KILN_I32, 2, three_zero, NULL),
        make_tensor("empty3", KILN_F32, 3, big_zero, NULL),
    };
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, ts, 4, NULL, NULL, 0, &err), 0);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 4);
    assert_int_equal(f.tensors[0].rank, 0);
    assert_int_equal(kiln_tensor_numel(&f.tensors[0]), 1);
    assert_true(*(float *)f.tensors[0].data == 7.0f);
    for (int k = 1; k < 4; k++) {
        assert_int_equal(kiln_tensor_numel(&f.tensors[k]), 0);
        assert_non_null(f.tensors[k].data); /* NULL only ever means failure */
    }
    assert_int_equal(f.tensors[2].dtype, KILN_I32);
    assert_int_equal(f.tensors[2].shape[0], 3);
    assert_int_equal(f.tensors[3].shape[2], 1000000000);
    kiln_tensor_file_free(&f);
}

static void test_roundtrip_metadata_escapes(void **state) {
    const char *path = tmp_path("d.safetensors");
    const char *keys[] = {"quote\"back\\slash", "ctl\n\t\r\b\f\x01\x1f",
                          "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", ""};
    const char *vals[] = {"\"}{,:[]", "line1\nline2", "\xe6\x97\xa5\xe6\x9c\xac", ""};
    float x = 1.0f;
    kiln_tensor t = make_tensor("na\"me\\\n\xc3\xa9", KILN_F32, 0, NULL, &x);
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, &t, 1, keys, vals, 4, &err), 0);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n_meta, 4);
    for (int k = 0; k < 4; k++) {
        assert_string_equal(f.meta_keys[k], keys[k]);
        assert_string_equal(f.meta_values[k], vals[k]);
    }
    assert_non_null(kiln_tensor_file_find(&f, t.name));
    kiln_tensor_file_free(&f);
}

/* The exact bytes the writer produces: what Hugging Face's library expects. */
static void test_write_layout(void **state) {
    const char *path = tmp_path("e.safetensors");
    float a[2] = {1.0f, 2.0f};
    int32_t b[3] = {1, 2, 3};
    int64_t sa[] = {2}, sb[] = {1, 3};
    kiln_tensor ts[2] = {make_tensor("a", KILN_F32, 1, sa, a),
                         make_tensor("b", KILN_I32, 2, sb, b)};
    const char *k[] = {"format"}, *v[] = {"pt"};
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, ts, 2, k, v, 1, &err), 0);

    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char buf[512];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint64_t hn = 0;
    for (int i = 0; i < 8; i++) hn |= (uint64_t)buf[i] << 8 * i;
    assert_int_equal(hn % 8, 0);
    assert_int_equal(n, 8 + hn + 20);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"I32\",\"shape\":[1,3],\"data_offsets\":[8,20]}}";
    assert_memory_equal(buf + 8, want, strlen(want));
    for (size_t i = 8 + strlen(want); i < 8 + hn; i++) assert_int_equal(buf[i], ' ');
    assert_int_equal(buf[8 + hn], 0x00); /* 1.0f little-endian: 00 00 80 3f */
    assert_int_equal(buf[8 + hn + 3], 0x3f);
    assert_int_equal(buf[8 + hn + 8], 1);
}

/* Files from other writers: whitespace, gaps between tensors, trailing bytes, header
 * entries in any order, and metadata anywhere are all fine. */
static void test_read_tolerates_valid_variants(void **state) {
    const char *path = tmp_path("f.safetensors");
    unsigned char data[32] = {0};
    float one = 1.0f, two = 2.0f;
    memcpy(data + 16, &one, 4);
    memcpy(data + 4, &two, 4);
    write_file(path,
               " \n{ \"b\" : {\"shape\":[1], \"data_offsets\": [16, 20], \"dtype\": \"F32\"},\r\n"
               "\t\"__metadata__\": {}, \"a\": "
               "{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}   ",
               data, sizeof data);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 2);
    assert_int_equal(f.n_meta, 0);
    assert_string_equal(f.tensors[0].name, "b");
    assert_true(*(float *)kiln_tensor_file_find(&f, "b")->data == 1.0f);
    assert_true(*(float *)kiln_tensor_file_find(&f, "a")->data == 2.0f);
    kiln_tensor_file_free(&f);

    /* An empty header object is a valid file with no tensors. */
    write_file(path, "{}      ", NULL, 0);
    read_ok(path, &f);
    assert_int_equal(f.n, 0);
    kiln_tensor_file_free(&f);
}

/* ---- conversions ------------------------------------------------------------------------ */

static void test_convert_f16(void **state) {
    const char *path = tmp_path("h.safetensors");
    const uint16_t h[] = {
        0x3C00,
        /* 1 */ 0xC000,
        /* -2 */ 0x3555, /* 0.333251953125 */
        0x7BFF,
        /* 65504 */ 0x0400, /* 2^-14 smallest normal */
        0x0001,
        /* 2^-24 smallest subnormal */ 0x03FF, /* largest subnormal */
        0x8001,
        /* -2^-24 */ 0x0000,
        0x8000, /* -0 */
        0x7C00,
        /* inf */ 0xFC00,
        /* -inf */ 0x7E00,
        /* nan */ 0xFE01, /* -nan */
    };
    const float want[] = {1.0f,     -2.0f,    0.333251953125f, 65504.0f,
                          0x1p-14f, 0x1p-24f, 1023 * 0x1p-24f, -0x1p-24f,
                          0.0f,     -0.0f,    INFINITY,        -INFINITY};
    enum { N = sizeof h / sizeof h[0] };
    unsigned char bytes[2 * N];
    for (int k = 0; k < N; k++) bytes[2 * k] = h[k] & 0xFF, bytes[2 * k + 1] = h[k] >> 8;
    char header[128];
    snprintf(header, sizeof header,
             "{\"x\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", N, 2 * N);
    write_file(path, header, bytes, sizeof bytes);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.tensors[0].dtype, KILN_F32);
    const float *x = f.tensors[0].data;
    for (int k = 0; k < 12; k++)
        assert_int_equal(f32_bits(x[k]), f32_bits(want[k])); /* incl. sign of zero */
    assert_true(isnan(x[12]) && !signbit(x[12]));
    assert_true(isnan(x[13]) && signbit(x[13]));
    kiln_tensor_file_free(&f);
}

static void test_convert_bf16(void **state) {
    const char *path = tmp_path("bf.safetensors");
    const uint16_t h[] = {0x3F80, 0xC040, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x7FC0, 0x4049};
    enum { N = sizeof h / sizeof h[0] };
    unsigned char bytes[2 * N];
    for (int k = 0; k < N; k++) bytes[2 * k] = h[k] & 0xFF, bytes[2 * k + 1] = h[k] >> 8;
    write_file(path, "{\"x\":{\"dtype\":\"BF16\",\"shape\":[2,4],\"data_offsets\":[0,16]}}", bytes,
               sizeof bytes);
    kiln_tensor_file f;
    read_ok(path, &f);
    const float *x = f.tensors[0].data;
    for (int k = 0; k < N; k++) assert_int_equal(f32_bits(x[k]), (uint32_t)h[k] << 16);
    assert_true(x[0] == 1.0f && x[1] == -3.0f && isinf(x[2]) && isnan(x[6]));
    kiln_tensor_file_free(&f);
}

static void store_le(unsigned char *b, uint64_t v, int size) {
    for (int k = 0; k < size; k++) b[k] = (unsigned char)(v >> 8 * k);
}

static void test_convert_f64(void **state) {
    const char *path = tmp_path("f64.safetensors");
    /* the largest double that still rounds to FLT_MAX, not to infinity */
    const double d[] = {1.0,      -0.1,      1e-50, 3.4028235e38, 0x1.fffffefffffffp127,
                        INFINITY, -INFINITY, NAN,   -0.0};
    enum { N = sizeof d / sizeof d[0] };
    unsigned char bytes[8 * N];
    for (int k = 0; k < N; k++) {
        uint64_t u;
        memcpy(&u, &d[k], 8);
        store_le(bytes + 8 * k, u, 8);
    }
    char header[128];
    snprintf(header, sizeof header,
             "{\"x\":{\"dtype\":\"F64\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", N, 8 * N);
    write_file(path, header, bytes, sizeof bytes);
    kiln_tensor_file f;
    read_ok(path, &f);
    const float *x = f.tensors[0].data;
    assert_true(x[0] == 1.0f && x[1] == -0.1f && x[2] == 0.0f && x[3] == 3.4028235e38f);
    assert_true(x[4] == 3.4028235e38f);
    assert_true(x[5] == INFINITY && x[6] == -INFINITY && isnan(x[7]));
    assert_true(x[8] == 0.0f && signbit(x[8]));
    kiln_tensor_file_free(&f);

    /* A finite double past f32's range is an error naming the element. */
    uint64_t u;
    double big = 0x1.ffffffp127; /* half way to the next power: rounds to infinity */
    memcpy(&u, &big, 8);
    store_le(bytes + 8 * 2, u, 8);
    write_file(path, header, bytes, sizeof bytes);
    expect_read_fails(path, "F64 element 2");
    double huge = -1e300;
    memcpy(&u, &huge, 8);
    store_le(bytes + 8 * 2, u, 8);
    write_file(path, header, bytes, sizeof bytes);
    expect_read_fails(path, "outside the f32 range");
}

static void test_convert_i64(void **state) {
    const char *path = tmp_path("i64.safetensors");
    const int64_t v[] = {0, -1, 123456789, INT32_MAX, INT32_MIN};
    unsigned char bytes[8 * 5];
    for (int k = 0; k < 5; k++) store_le(bytes + 8 * k, (uint64_t)v[k], 8);
    const char *header = "{\"ids\":{\"dtype\":\"I64\",\"shape\":[5],\"data_offsets\":[0,40]}}";
    write_file(path, header, bytes, sizeof bytes);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.tensors[0].dtype, KILN_I32);
    const int32_t *x = f.tensors[0].data;
    for (int k = 0; k < 5; k++) assert_int_equal(x[k], v[k]);
    kiln_tensor_file_free(&f);

    store_le(bytes + 8 * 3, (uint64_t)INT32_MAX + 1, 8);
    write_file(path, header, bytes, sizeof bytes);
    expect_read_fails(path, "I64 element 3: 2147483648 does not fit in i32");
    store_le(bytes + 8 * 3, (uint64_t)INT64_MIN, 8);
    write_file(path, header, bytes, sizeof bytes);
    expect_read_fails(path, "'ids'");
}

static void test_convert_small_ints(void **state) {
    const char *path = tmp_path("ints.safetensors");
    unsigned char data[64] = {0};
    data[0] = 0xFF, data[1] = 0x80;                          /* U8: 255, 128 */
    data[2] = 0xFF, data[3] = 0x80;                          /* I8: -1, -128 */
    store_le(data + 4, 0x8000, 2), store_le(data + 6, 7, 2); /* I16: -32768, 7 */
    store_le(data + 8, 0xFFFF, 2);                           /* U16: 65535 */
    data[10] = 1, data[11] = 0;                              /* BOOL */
    store_le(data + 12, 2000000000u, 4);                     /* U32 */
    store_le(data + 16, 5, 8);                               /* U64 */
    write_file(path,
               "{\"u8\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
               "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[2,4]},"
               "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[4,8]},"
               "\"u16\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[8,10]},"
               "\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[10,12]},"
               "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[12,16]},"
               "\"u64\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[16,24]}}",
               data, 24);
    kiln_tensor_file f;
    read_ok(path, &f);
    const int32_t *x;
    x = kiln_tensor_file_find(&f, "u8")->data;
    assert_true(x[0] == 255 && x[1] == 128);
    x = kiln_tensor_file_find(&f, "i8")->data;
    assert_true(x[0] == -1 && x[1] == -128);
    x = kiln_tensor_file_find(&f, "i16")->data;
    assert_true(x[0] == -32768 && x[1] == 7);
    x = kiln_tensor_file_find(&f, "u16")->data;
    assert_true(x[0] == 65535);
    x = kiln_tensor_file_find(&f, "b")->data;
    assert_true(x[0] == 1 && x[1] == 0);
    assert_int_equal(*(int32_t *)kiln_tensor_file_find(&f, "u32")->data, 2000000000);
    assert_int_equal(*(int32_t *)kiln_tensor_file_find(&f, "u64")->data, 5);
    for (int k = 0; k < f.n; k++) assert_int_equal(f.tensors[k].dtype, KILN_I32);
    kiln_tensor_file_free(&f);

    data[11] = 2;
    expect_error("{\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[10,12]}}", data, 24,
                 "not 0 or 1");
    store_le(data + 12, 3000000000u, 4);
    expect_error("{\"u\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[12,16]}}", data, 24,
                 "does not fit in i32");
}

/* A large f16 tensor exercises the chunked conversion across chunk boundaries. */
static void test_convert_f16_large_chunked(void **state) {
    const char *path = tmp_path("big16.safetensors");
    enum { N = 1 << 20 }; /* 2 MiB of f16: two chunks of the reader's 1 MiB */
    unsigned char *bytes = malloc(2 * N);
    for (int k = 0; k < N; k++) {
        uint16_t h = (uint16_t)(0x3C00 + (k % 1024)); /* 1 + (k%1024)/1024 */
        bytes[2 * k] = h & 0xFF, bytes[2 * k + 1] = h >> 8;
    }
    char header[128];
    snprintf(header, sizeof header,
             "{\"x\":{\"dtype\":\"F16\",\"shape\":[1024,%d],\"data_offsets\":[0,%d]}}", N / 1024,
             2 * N);
    write_file(path, header, bytes, 2 * (size_t)N);
    free(bytes);
    kiln_tensor_file f;
    read_ok(path, &f);
    const float *x = f.tensors[0].data;
    for (int k = 0; k < N; k += 997) assert_true(x[k] == 1.0f + (float)(k % 1024) / 1024.0f);
    assert_true(x[N - 1] == 1.0f + 1023.0f / 1024.0f);
    kiln_tensor_file_free(&f);
}

static void test_unsupported_and_unknown_dtypes(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 8,
                 "dtype F8_E4M3 is not supported");
    expect_error("{\"x\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 8,
                 "not supported");
    expect_error("{\"x\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 8,
                 "unknown dtype 'Q4'");
    expect_error("{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 8,
                 "unknown dtype 'f32'");
    expect_error("{\"x\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", data, 8,
                 "dtype must be a string");
}

/* ---- hostile files: the framing ---------------------------------------------------------- */

static void test_bad_paths(void **state) {
    kiln_tensor_file f;
    kiln_rt_error err;
    assert_int_not_equal(kiln_tensor_file_read("", &f, &err), 0);
    assert_non_null(strstr(err.msg, "empty file name"));
    assert_true(is_empty(&f));
    assert_int_not_equal(kiln_tensor_file_read(NULL, &f, &err), 0);
    assert_true(strlen(err.msg) > 0);
    assert_int_not_equal(kiln_tensor_file_read("x", &f, NULL), 0); /* err may be NULL */
    expect_read_fails(tmp_path("does-not-exist.safetensors"), "cannot open");
    expect_read_fails(g_dir, "not a regular file");
}

static void test_short_files(void **state) {
    const char *path = tmp_path("short.safetensors");
    write_bytes(path, "", 0);
    expect_read_fails(path, "too short");
    write_bytes(path, "\x02\0\0\0\0\0\0", 7);
    expect_read_fails(path, "too short");
}

static void test_header_length_bounds(void **state) {
    const char *path = tmp_path("len.safetensors");
    unsigned char buf[16] = {0};
    memset(buf, 0xFF, 8); /* 2^64 - 1 */
    write_bytes(path, buf, 16);
    expect_read_fails(path, "exceeds the limit");
    store_le(buf, 200000000, 8); /* past the 100 MB cap */
    write_bytes(path, buf, 16);
    expect_read_fails(path, "exceeds the limit");
    store_le(buf, 9, 8); /* one more than the 8 bytes that follow */
    memcpy(buf + 8, "{}      ", 8);
    write_bytes(path, buf, 16);
    expect_read_fails(path, "larger than the rest of the file");
    expect_read_fails(path, "not a safetensors file");
    write_bytes(path, "hello, world: a text file\n", 26); /* a text file says so */
    expect_read_fails(path, "not a safetensors file (it starts with text \"hello, w\")");
    store_le(buf, 0, 8); /* an empty header is not JSON */
    write_bytes(path, buf, 8);
    expect_read_fails(path, "not valid JSON");
}

static void test_invalid_json(void **state) {
    static const char *const bad[] = {
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\":1}x",
        "{\"a\":1}{}",
        "{'a':1}",
        "{\"a\":[1,2,]}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":1e}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":NaN}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":\"unterminated}",
        "{\"a\":\"bad \\x escape\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\u0000\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"\xC0\xAF\"}",
        "{\"a\":\"\xED\xA0\x80\"}",
        "{\"a\":\"\xF4\x90\x80\x80\"}",
        "{\"a\":\"\xE2\x82\"}",
        "{\"a\":\"\xFF\"}",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "[\"a\"]x",
        "/* c */ {}",
        "{\"a\":1}\x00",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t n = strlen(bad[k]);
        if (k == sizeof bad / sizeof bad[0] - 1) n++; /* the trailing NUL counts */
        const char *path = tmp_path("json.safetensors");
        unsigned char buf[128];
        store_le(buf, n, 8);
        memcpy(buf + 8, bad[k], n);
        write_bytes(path, buf, 8 + n);
        expect_read_fails(path, "not valid JSON");
    }
}

static void test_header_not_an_object(void **state) {
    expect_error("[]", NULL, 0, "must be a JSON object, got an array");
    expect_error("\"str\"", NULL, 0, "must be a JSON object, got a string");
    expect_error("42", NULL, 0, "must be a JSON object");
    expect_error("null", NULL, 0, "must be a JSON object");
}

static void test_nesting_depth_limit(void **state) {
    /* 10,000 levels: bounded recursion must refuse rather than overflow the stack. */
    enum { D = 10000 };
    char *h = malloc(2 * D + 16);
    size_t n = 0;
    n += (size_t)sprintf(h, "{\"a\":");
    for (int k = 0; k < D; k++) h[n++] = '[';
    for (int k = 0; k < D; k++) h[n++] = ']';
    h[n++] = '}';
    h[n] = '\0';
    expect_error(h, NULL, 0, "nesting is deeper than");
    free(h);
    /* Depth inside the limit but still the wrong type is a schema error. */
    expect_error("{\"a\":[[[[1]]]]}", NULL, 0, "expected an object with dtype");
}

/* ---- hostile files: the entries ------------------------------------------------------------ */

static void test_duplicate_names(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 data, 8, "tensor 'w': appears twice");
    expect_error("{\"__metadata__\":{},\"__metadata__\":{}}", NULL, 0,
                 "__metadata__ appears twice");
    expect_error("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", NULL, 0, "key 'k' appears twice");
    expect_error(
        "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data,
        8, "field 'dtype' appears twice");
}

static void test_fields_missing_or_wrong(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", data, 8,
                 "tensor 'w': missing field 'dtype'");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", data, 8,
                 "missing field 'shape'");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", data, 8,
                 "missing field 'data_offsets'");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}",
                 data, 8, "unknown field 'extra'");
    expect_error("{\"w\":[1,2]}", data, 8, "tensor 'w': expected an object");
    expect_error("{\"w\":\"F32\"}", data, 8, "got a string");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", data, 8,
                 "shape must be an array");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", data, 8,
                 "got an object");
    expect_error("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 8,
                 "empty name");
}

static void test_rank_limit(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                 data, 8, "rank 9 exceeds the maximum of 8");
    /* rank 8 exactly is fine */
    const char *path = tmp_path("r8.safetensors");
    write_file(path,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               data, 8);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.tensors[0].rank, 8);
    kiln_tensor_file_free(&f);
}

static void test_bad_dims(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data, 8,
                 "shape[0] is negative");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data, 8,
                 "shape[0] is not an integer");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1e2],\"data_offsets\":[0,4]}}", data, 8,
                 "shape[1] is not an integer");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", data, 8,
                 "shape[0] is not an integer");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", data, 8,
                 "shape[0] is not an integer");
    expect_error(
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", data,
        8, "shape[0] is not an integer in the int64 range");
}

static void test_shape_product_overflow(void **state) {
    unsigned char data[8] = {0};
    expect_error(
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
        data, 8, "too many elements");
    expect_error(
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807],\"data_offsets\":[0,4]}}", data,
        8, "too many elements");
    /* A zero dim does not excuse absurd others. */
    expect_error(
        "{\"w\":{\"dtype\":\"U8\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}}",
        data, 8, "too many elements");
    /* Huge but not overflowing: caught by the size check, nothing allocated. */
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4]}}",
                 data, 8, "do not match shape");
}

static void test_bad_data_offsets(void **state) {
    unsigned char data[8] = {0};
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data, 8,
                 "array of two integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", data, 8,
                 "array of two integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", data, 8,
                 "array of two integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", data, 8,
                 "non-negative integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", data, 8,
                 "non-negative integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", data, 8,
                 "non-negative integers");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", data, 8,
                 "begin is after end");
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", data, 8,
                 "data_offsets [8, 12] end past the data section (8 bytes)");
    expect_error(
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", data,
        8, "non-negative integers");
}

static void test_size_mismatch_message(void **state) {
    unsigned char *data = calloc(1, 2000);
    const char *path = tmp_path("weights.safetensors");
    write_file(path,
               "{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[17,16],\"data_offsets\":[0,100]}}",
               data, 2000);
    kiln_tensor_file f;
    kiln_rt_error err;
    assert_int_not_equal(kiln_tensor_file_read(path, &f, &err), 0);
    char want[512];
    snprintf(want, sizeof want,
             "%s: tensor 'wte.weight': data_offsets [0, 100] do not match shape [17,16] of F32 "
             "(1088 bytes)",
             path);
    assert_string_equal(err.msg, want);
    expect_error("{\"x\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,4]}}", data, 8,
                 "shape [] of F16 (2 bytes)");
    expect_error("{\"x\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[0,4]}}", data, 8,
                 "(0 bytes)");
    free(data);
}

static void test_overlapping_ranges(void **state) {
    unsigned char data[32] = {0};
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                 data, 32, "tensors 'a' [0, 16] and 'b' [12, 20] overlap");
    /* Identical ranges, and a range nested in an earlier, longer one. */
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                 "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 data, 32, "overlap");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
                 "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]}}",
                 data, 32, "overlap");
    /* Touching ranges and empty ranges inside others are fine. */
    const char *path = tmp_path("touch.safetensors");
    write_file(path,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
               data, 32);
    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 3);
    kiln_tensor_file_free(&f);
}

static void test_bad_metadata(void **state) {
    expect_error("{\"__metadata__\":{\"step\":5}}", NULL, 0,
                 "__metadata__ value for 'step' must be a string, got a number");
    expect_error("{\"__metadata__\":{\"a\":\"ok\",\"b\":null}}", NULL, 0, "value for 'b'");
    expect_error("{\"__metadata__\":{\"a\":[\"x\"]}}", NULL, 0, "got an array");
    expect_error("{\"__metadata__\":[]}", NULL, 0, "__metadata__ must be an object");
    expect_error("{\"__metadata__\":\"x\"}", NULL, 0, "__metadata__ must be an object");
}

/* Every truncation and many single-byte corruptions of a valid file: each read must
 * either succeed or fail with a message, never crash, leak or read out of bounds. */
static void test_truncations_and_corruptions(void **state) {
    const char *good = tmp_path("good.safetensors");
    float w[12];
    int32_t ids[3] = {1, 2, 3};
    for (int k = 0; k < 12; k++) w[k] = (float)k;
    int64_t s1[] = {3, 4}, s2[] = {3};
    kiln_tensor ts[2] = {make_tensor("w", KILN_F32, 2, s1, w),
                         make_tensor("ids", KILN_I32, 1, s2, ids)};
    const char *k[] = {"m"}, *v[] = {"v"};
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(good, ts, 2, k, v, 1, &err), 0);
    FILE *fp = fopen(good, "rb");
    unsigned char buf[1024];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);

    const char *path = tmp_path("mut.safetensors");
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, buf, len);
        expect_read_fails(path, path);
    }
    uint32_t rng = 12345;
    unsigned char mut[1024];
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(mut, buf, n);
        int flips = 1 + iter % 3;
        for (int j = 0; j < flips; j++) {
            rng = rng * 1664525u + 1013904223u;
            size_t pos = (rng >> 8) % n;
            rng = rng * 1664525u + 1013904223u;
            mut[pos] = (unsigned char)(rng >> 24);
        }
        write_bytes(path, mut, n);
        kiln_tensor_file f;
        if (kiln_tensor_file_read(path, &f, &err) == 0) {
            kiln_tensor_file_free(&f);
        } else {
            assert_true(strlen(err.msg) > 0);
            assert_true(is_empty(&f));
        }
    }
}

/* ---- writing: refusals and atomicity --------------------------------------------------------- */

static void test_write_refuses_bad_input(void **state) {
    const char *path = tmp_path("refuse.safetensors");
    float x[2] = {1, 2};
    int64_t s[] = {2}, neg[] = {-2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    kiln_rt_error err;
    /* an existing good file that no refused write may touch */
    kiln_tensor good = make_tensor("g", KILN_F32, 1, s, x);
    assert_int_equal(kiln_tensor_file_write(path, &good, 1, NULL, NULL, 0, &err), 0);

    kiln_tensor dup[2] = {make_tensor("a", KILN_F32, 1, s, x), make_tensor("a", KILN_F32, 1, s, x)};
    assert_int_not_equal(kiln_tensor_file_write(path, dup, 2, NULL, NULL, 0, &err), 0);
    assert_non_null(strstr(err.msg, "tensor 'a': name given twice"));

    kiln_tensor bad[] = {
        make_tensor("", KILN_F32, 1, s, x),         make_tensor("__metadata__", KILN_F32, 1, s, x),
        make_tensor("r", KILN_F32, 9, nine, x),     make_tensor("r", KILN_F32, -1, s, x),
        make_tensor("n", KILN_F32, 1, neg, x),      make_tensor("d", KILN_F32, 1, s, NULL),
        make_tensor("\xff\xfe", KILN_F32, 1, s, x), make_tensor("t", (kiln_dtype)7, 1, s, x),
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err.msg[0] = '\0';
        assert_int_not_equal(kiln_tensor_file_write(path, &bad[k], 1, NULL, NULL, 0, &err), 0);
        assert_non_null(strstr(err.msg, path));
    }
    kiln_tensor nameless = make_tensor(NULL, KILN_F32, 1, s, x);
    assert_int_not_equal(kiln_tensor_file_write(path, &nameless, 1, NULL, NULL, 0, &err), 0);
    const char *mk[] = {"k", "k"}, *mv[] = {"1", "2"};
    assert_int_not_equal(kiln_tensor_file_write(path, &good, 1, mk, mv, 2, &err), 0);
    assert_non_null(strstr(err.msg, "metadata key 'k' given twice"));
    const char *badv[] = {"\xc3"};
    assert_int_not_equal(kiln_tensor_file_write(path, &good, 1, mk, badv, 1, &err), 0);
    assert_int_not_equal(kiln_tensor_file_write(path, &good, 1, NULL, NULL, 1, &err), 0);
    assert_int_not_equal(kiln_tensor_file_write("", &good, 1, NULL, NULL, 0, &err), 0);
    assert_int_not_equal(kiln_tensor_file_write(path, NULL, 1, NULL, NULL, 0, &err), 0);

    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.tensors[0].name, "g");
    kiln_tensor_file_free(&f);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_write_failure_leaves_no_temp(void **state) {
    float x = 1.0f;
    kiln_tensor t = make_tensor("x", KILN_F32, 0, NULL, &x);
    kiln_rt_error err;
    /* The directory does not exist: nothing can be created. */
    char missing[256];
    snprintf(missing, sizeof missing, "%s/no/such/dir/w.safetensors", g_dir);
    assert_int_not_equal(kiln_tensor_file_write(missing, &t, 1, NULL, NULL, 0, &err), 0);
    assert_non_null(strstr(err.msg, "cannot create temporary file"));
    assert_int_equal(count_temp_files(g_dir), 0);

    /* The target is a directory: the temporary is written, the rename fails, and the
     * temporary must be removed again. */
    const char *dirpath = tmp_path("adir");
    assert_int_equal(mkdir(dirpath, 0700), 0);
    assert_int_not_equal(kiln_tensor_file_write(dirpath, &t, 1, NULL, NULL, 0, &err), 0);
    assert_non_null(strstr(err.msg, "renaming temporary file"));
    assert_int_equal(count_temp_files(g_dir), 0);
    struct stat st;
    assert_int_equal(stat(dirpath, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    rmdir(dirpath);
}

static void test_write_replaces_atomically(void **state) {
    const char *path = tmp_path("ckpt.safetensors");
    float a[4] = {1, 2, 3, 4}, b[2] = {9, 8};
    int64_t sa[] = {4}, sb[] = {2};
    kiln_tensor ta = make_tensor("old", KILN_F32, 1, sa, a),
                tb = make_tensor("new", KILN_F32, 1, sb, b);
    kiln_rt_error err;
    assert_int_equal(kiln_tensor_file_write(path, &ta, 1, NULL, NULL, 0, &err), 0);

    /* A reader holding the old file keeps seeing it whole: the new one is a new inode
     * renamed into place, not the old one truncated and rewritten. */
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat before, after;
    assert_int_equal(fstat(fd, &before), 0);
    assert_int_equal(kiln_tensor_file_write(path, &tb, 1, NULL, NULL, 0, &err), 0);
    assert_int_equal(stat(path, &after), 0);
    assert_true(before.st_ino != after.st_ino);
    unsigned char old[256];
    ssize_t got = pread(fd, old, sizeof old, 0);
    close(fd);
    assert_int_equal(got, before.st_size);
    assert_non_null(memmem(old, (size_t)got, "\"old\"", 5));

    kiln_tensor_file f;
    read_ok(path, &f);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.tensors[0].name, "new");
    assert_memory_equal(f.tensors[0].data, b, sizeof b);
    kiln_tensor_file_free(&f);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_write_bare_filename(void **state) {
    /* A path with no directory part writes into the current directory. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    int32_t v = 5;
    kiln_tensor t = make_tensor("v", KILN_I32, 0, NULL, &v);
    kiln_rt_error err;
    int rc = kiln_tensor_file_write("bare.safetensors", &t, 1, NULL, NULL, 0, &err);
    kiln_tensor_file f;
    int rc2 = kiln_tensor_file_read("bare.safetensors", &f, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, 0);
    assert_int_equal(*(int32_t *)f.tensors[0].data, 5);
    kiln_tensor_file_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aligned_alloc),
        cmocka_unit_test(test_roundtrip_f32_with_metadata),
        cmocka_unit_test(test_roundtrip_i32_order_and_many),
        cmocka_unit_test(test_roundtrip_scalar_and_empty),
        cmocka_unit_test(test_roundtrip_metadata_escapes),
        cmocka_unit_test(test_write_layout),
        cmocka_unit_test(test_read_tolerates_valid_variants),
        cmocka_unit_test(test_convert_f16),
        cmocka_unit_test(test_convert_bf16),
        cmocka_unit_test(test_convert_f64),
        cmocka_unit_test(test_convert_i64),
        cmocka_unit_test(test_convert_small_ints),
        cmocka_unit_test(test_convert_f16_large_chunked),
        cmocka_unit_test(test_unsupported_and_unknown_dtypes),
        cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_short_files),
        cmocka_unit_test(test_header_length_bounds),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_header_not_an_object),
        cmocka_unit_test(test_nesting_depth_limit),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_fields_missing_or_wrong),
        cmocka_unit_test(test_rank_limit),
        cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_shape_product_overflow),
        cmocka_unit_test(test_bad_data_offsets),
        cmocka_unit_test(test_size_mismatch_message),
        cmocka_unit_test(test_overlapping_ranges),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_truncations_and_corruptions),
        cmocka_unit_test(test_write_refuses_bad_input),
        cmocka_unit_test(test_write_failure_leaves_no_temp),
        cmocka_unit_test(test_write_replaces_atomically),
        cmocka_unit_test(test_write_bare_filename),
    };
    return cmocka_run_group_tests_name("safetensors", tests, setup_dir, teardown_dir);
}
