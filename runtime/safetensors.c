/* safetensors.c — reading and writing safetensors files.
 *
 * The format: an 8-byte little-endian header length N, N bytes of a JSON object
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the data section; offsets are relative
 * to its start.
 *
 * Reading is done in phases so that nothing is allocated in proportion to what a file
 * claims before the claim is checked against the file's real size:
 *   1. size the file, read and bound the header length, read the header (<= 100 MB);
 *   2. parse it with the runtime's own strict JSON parser (json_min.c);
 *   3. validate every entry (types, dtype, rank, dims, offsets inside the data section,
 *      byte size = numel * dtype size), then names (duplicates) and byte ranges
 *      (overlaps) across entries, by sorting;
 *   4. only then allocate one 64-byte aligned buffer per tensor and read its bytes:
 *      f32/i32 straight into the buffer with fread, other dtypes through a fixed 1 MiB
 *      chunk that is converted element by element, so a file is never held twice.
 *
 * Writing builds the header in memory, pads it with spaces to a multiple of 8 bytes
 * (the data section then starts 8-byte aligned, as Hugging Face's writer does), and
 * writes header and data through atomic_file.c (a temporary file beside the target,
 * fsync'ed and renamed over it only when everything succeeded).
 *
 * Values are stored little-endian whatever the host; the fast paths that copy bytes
 * unchanged are taken only on little-endian hosts.
 */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "atomic_file.h"
#include "json_min.h"
#include "rt_error.h"
#include "kiln/runtime.h"

/* Hugging Face's reader uses the same cap; real headers are kilobytes. */
#define ST_MAX_HEADER 100000000ull
/* Conversion chunk: a multiple of every element size. */
#define ST_CHUNK (1u << 20)

/* ---- dtypes ------------------------------------------------------------------------ */

/* clang-format off */
typedef enum st_kind {
    ST_F32, ST_F16, ST_BF16, ST_F64,
    ST_I32, ST_I64, ST_I16, ST_I8, ST_U8, ST_U16, ST_U32, ST_U64, ST_BOOL,
    ST_KIND_COUNT
} st_kind;

static const struct {
    const char *name; /* as spelled in headers */
    int size;         /* bytes per element in the file */
    kiln_dtype to;    /* what it becomes in memory */
} DTYPES[ST_KIND_COUNT] = {
    [ST_F32] = {"F32", 4, KILN_F32},  [ST_F16] = {"F16", 2, KILN_F32},
    [ST_BF16] = {"BF16", 2, KILN_F32}, [ST_F64] = {"F64", 8, KILN_F32},
    [ST_I32] = {"I32", 4, KILN_I32},  [ST_I64] = {"I64", 8, KILN_I32},
    [ST_I16] = {"I16", 2, KILN_I32},  [ST_I8] = {"I8", 1, KILN_I32},
    [ST_U8] = {"U8", 1, KILN_I32},    [ST_U16] = {"U16", 2, KILN_I32},
    [ST_U32] = {"U32", 4, KILN_I32},  [ST_U64] = {"U64", 8, KILN_I32},
    [ST_BOOL] = {"BOOL", 1, KILN_I32},
};

/* clang-format on */

/* dtypes the format defines but kiln refuses, so the message can say "not supported"
 * rather than "unknown". */
static const char *const REFUSED_DTYPES[] = {
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

static int host_is_little(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint16_t load16(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }
static uint32_t load32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t load64(const unsigned char *b) { return load32(b) | (uint64_t)load32(b + 4) << 32; }
static void store32(unsigned char *b, uint32_t v) {
    for (int k = 0; k < 4; k++) b[k] = (unsigned char)(v >> 8 * k);
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double f64_from_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Every half is exactly
 * representable as a float, including subnormals, infinities and nan payloads. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | mant << 13); /* inf, nan */
    if (exp != 0) return f32_from_bits(sign | (exp - 15 + 127) << 23 | mant << 13);
    /* zero or subnormal: mant * 2^-24, exact in float arithmetic */
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
}

/* Finite doubles that round to a finite float: below FLT_MAX plus half an ulp (at
 * exactly half way, round-to-even goes up to infinity). */
static int f64_fits_f32(double d) {
    const double limit = 0x1.ffffffp127;
    return isnan(d) || isinf(d) || (d < limit && d > -limit);
}

/* Converts n elements of kind k from the little-endian bytes src into dst (float[n]
 * or int32_t[n], per DTYPES[k].to). Returns the index of the first element whose
 * value kiln cannot represent, or -1 when all converted. */
static int64_t convert(st_kind k, const unsigned char *src, int64_t n, void *dst) {
    float *f = dst;
    int32_t *i = dst;
    const int size = DTYPES[k].size;
    for (int64_t j = 0; j < n; j++) {
        const unsigned char *b = src + j * size;
        switch (k) {
        case ST_F32: f[j] = f32_from_bits(load32(b)); break;
        case ST_F16: f[j] = f16_to_f32(load16(b)); break;
        case ST_BF16: f[j] = f32_from_bits((uint32_t)load16(b) << 16); break;
        case ST_F64: {
            double d = f64_from_bits(load64(b));
            if (!f64_fits_f32(d)) return j;
            f[j] = (float)d;
            break;
        }
        case ST_I32: i[j] = (int32_t)load32(b); break;
        case ST_I64: {
            int64_t v = (int64_t)load64(b);
            if (v < INT32_MIN || v > INT32_MAX) return j;
            i[j] = (int32_t)v;
            break;
        }
        case ST_U64:
            if (load64(b) > INT32_MAX) return j;
            i[j] = (int32_t)load64(b);
            break;
        case ST_U32:
            if (load32(b) > INT32_MAX) return j;
            i[j] = (int32_t)load32(b);
            break;
        case ST_I16: i[j] = (int16_t)load16(b); break;
        case ST_U16: i[j] = load16(b); break;
        case ST_I8: i[j] = (int8_t)b[0]; break;
        case ST_U8: i[j] = b[0]; break;
        case ST_BOOL:
            if (b[0] > 1) return j;
            i[j] = b[0];
            break;
        case ST_KIND_COUNT: return j;
        }
    }
    return -1;
}

/* Prints the value convert() refused, for the error message. */
static void describe_value(st_kind k, const unsigned char *b, char *out, size_t cap) {
    switch (k) {
    case ST_F64: snprintf(out, cap, "%g is outside the f32 range", f64_from_bits(load64(b))); break;
    case ST_I64:
        snprintf(out, cap, "%lld does not fit in i32", (long long)(int64_t)load64(b));
        break;
    case ST_U64:
        snprintf(out, cap, "%llu does not fit in i32", (unsigned long long)load64(b));
        break;
    case ST_U32: snprintf(out, cap, "%lu does not fit in i32", (unsigned long)load32(b)); break;
    case ST_BOOL: snprintf(out, cap, "byte %u is not 0 or 1", b[0]); break;
    default: snprintf(out, cap, "cannot be converted"); break;
    }
}

/* ---- reading: header validation ------------------------------------------------------ */

/* One validated header entry. */
typedef struct st_entry {
    const char *name; /* points into the decoded header text */
    st_kind kind;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t numel;
    uint64_t begin, end; /* byte range inside the data section */
} st_entry;

typedef struct reader {
    const char *path;
    kiln_rt_error *err;
    FILE *f;
    uint64_t data_start, data_size; /* the data section, in file bytes */
    char *header;                   /* header text (the parsed document keeps its own strings) */
    jm_doc doc;
    st_entry *entries;
    int n_entries;
    const char **meta_keys, **meta_values; /* into the header text */
    int n_meta;
    unsigned char *chunk; /* conversion buffer, ST_CHUNK bytes */
} reader;

static const char *kind_name(const jm_value *v) {
    static const char *const names[] = {"null",     "a boolean", "a number",
                                        "a string", "an array",  "an object"};
    return v->kind < sizeof names / sizeof names[0] ? names[v->kind] : "a value";
}

/* "[17,16]" — how shapes appear in messages (as in the header). */
static void format_shape(const int64_t *shape, int rank, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < rank && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

static int parse_dtype(reader *r, const char *name, const jm_value *v, st_kind *kind) {
    if (v->kind != JM_STRING)
        return kiln_rt_fail(r->err, r->path, name, "dtype must be a string, got %s", kind_name(v));
    for (int k = 0; k < ST_KIND_COUNT; k++)
        if (strcmp(v->str, DTYPES[k].name) == 0) {
            *kind = (st_kind)k;
            return 0;
        }
    for (size_t k = 0; k < sizeof REFUSED_DTYPES / sizeof REFUSED_DTYPES[0]; k++)
        if (strcmp(v->str, REFUSED_DTYPES[k]) == 0)
            return kiln_rt_fail(r->err, r->path, name,
                                "dtype %s is not supported (kiln loads F32, F16, BF16, F64 and "
                                "integer dtypes)",
                                v->str);
    return kiln_rt_fail(r->err, r->path, name, "unknown dtype '%s'", v->str);
}

static int parse_shape(reader *r, const char *name, const jm_value *v, st_entry *e) {
    const jm_value *all = r->doc.v;
    if (v->kind != JM_ARRAY)
        return kiln_rt_fail(r->err, r->path, name, "shape must be an array, got %s", kind_name(v));
    if (v->count > KILN_MAX_RANK)
        return kiln_rt_fail(r->err, r->path, name, "rank %d exceeds the maximum of %d", v->count,
                            KILN_MAX_RANK);
    e->rank = v->count;
    int d = 0;
    for (int32_t c = v->first; c >= 0; c = all[c].next, d++) {
        if (all[c].kind != JM_NUMBER || !all[c].is_int)
            return kiln_rt_fail(r->err, r->path, name, "shape[%d] is not an integer in the int64 range", d);
        if (signbit(all[c].dbl)) /* "-0" too, as params.c, which reads digits only */
            return kiln_rt_fail(r->err, r->path, name, "shape[%d] is negative (%lld)", d,
                                (long long)all[c].num);
        e->shape[d] = all[c].num;
    }
    /* numel * element size must fit int64: overflow is checked on the non-zero dims, so
     * a zero dim does not hide an absurd shape like [0, 2^40, 2^40]. */
    int64_t nonzero = 1;
    int has_zero = 0;
    int64_t limit = INT64_MAX / DTYPES[e->kind].size;
    for (d = 0; d < e->rank; d++) {
        if (e->shape[d] == 0) {
            has_zero = 1;
        } else if (nonzero > limit / e->shape[d]) {
            char s[128];
            format_shape(e->shape, e->rank, s, sizeof s);
            return kiln_rt_fail(r->err, r->path, name, "shape %s has too many elements", s);
        } else {
            nonzero *= e->shape[d];
        }
    }
    e->numel = has_zero ? 0 : nonzero;
    return 0;
}

static int parse_offsets(reader *r, const char *name, const jm_value *v, st_entry *e) {
    const jm_value *all = r->doc.v;
    if (v->kind != JM_ARRAY || v->count != 2)
        return kiln_rt_fail(r->err, r->path, name, "data_offsets must be an array of two integers");
    const jm_value *b = &all[v->first], *en = &all[b->next];
    if (b->kind != JM_NUMBER || !b->is_int || signbit(b->dbl) || en->kind != JM_NUMBER || !en->is_int ||
        signbit(en->dbl)) /* "-0" too, as params.c */
        return kiln_rt_fail(r->err, r->path, name, "data_offsets must be two non-negative integers");
    e->begin = (uint64_t)b->num;
    e->end = (uint64_t)en->num;
    if (e->begin > e->end)
        return kiln_rt_fail(r->err, r->path, name, "data_offsets [%llu, %llu]: begin is after end",
                            (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > r->data_size)
        return kiln_rt_fail(r->err, r->path, name,
                            "data_offsets [%llu, %llu] end past the data section (%llu bytes)",
                            (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)r->data_size);
    return 0;
}

/* Validates one tensor entry: an object with exactly dtype, shape and data_offsets. */
static int parse_entry(reader *r, const jm_value *v, st_entry *e) {
    const char *name = v->key;
    const jm_value *all = r->doc.v;
    memset(e, 0, sizeof *e); /* shape entries past rank stay 0 */
    e->name = name;
    if (name[0] == '\0') return kiln_rt_fail(r->err, r->path, NULL, "a tensor has an empty name");
    if (v->kind != JM_OBJECT)
        return kiln_rt_fail(r->err, r->path, name,
                            "expected an object with dtype, shape and data_offsets, got %s", kind_name(v));
    const jm_value *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (int32_t c = v->first; c >= 0; c = all[c].next) {
        const jm_value **slot;
        if (strcmp(all[c].key, "dtype") == 0) slot = &dtype;
        else if (strcmp(all[c].key, "shape") == 0) slot = &shape;
        else if (strcmp(all[c].key, "data_offsets") == 0) slot = &offsets;
        else return kiln_rt_fail(r->err, r->path, name, "unknown field '%s'", all[c].key);
        if (*slot) return kiln_rt_fail(r->err, r->path, name, "field '%s' appears twice", all[c].key);
        *slot = &all[c];
    }
    if (!dtype) return kiln_rt_fail(r->err, r->path, name, "missing field 'dtype'");
    if (!shape) return kiln_rt_fail(r->err, r->path, name, "missing field 'shape'");
    if (!offsets) return kiln_rt_fail(r->err, r->path, name, "missing field 'data_offsets'");
    if (parse_dtype(r, name, dtype, &e->kind) || parse_shape(r, name, shape, e) ||
        parse_offsets(r, name, offsets, e))
        return -1;
    /* numel * size cannot overflow: parse_shape bounded it. */
    uint64_t want = (uint64_t)e->numel * (uint64_t)DTYPES[e->kind].size;
    if (e->end - e->begin != want) {
        char s[128];
        format_shape(e->shape, e->rank, s, sizeof s);
        return kiln_rt_fail(r->err, r->path, name,
                            "data_offsets [%llu, %llu] do not match shape %s of %s (%llu bytes)",
                            (unsigned long long)e->begin, (unsigned long long)e->end, s,
                            DTYPES[e->kind].name, (unsigned long long)want);
    }
    return 0;
}

static int parse_metadata(reader *r, const jm_value *v) {
    const jm_value *all = r->doc.v;
    if (r->meta_keys) return kiln_rt_fail(r->err, r->path, NULL, "__metadata__ appears twice");
    if (v->kind != JM_OBJECT)
        return kiln_rt_fail(r->err, r->path, NULL, "__metadata__ must be an object, got %s", kind_name(v));
    /* +1: calloc(0) may return NULL, and a non-NULL array marks "seen". */
    r->meta_keys = calloc((size_t)v->count + 1, sizeof *r->meta_keys);
    r->meta_values = calloc((size_t)v->count + 1, sizeof *r->meta_values);
    if (!r->meta_keys || !r->meta_values) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    for (int32_t c = v->first; c >= 0; c = all[c].next) {
        if (all[c].kind != JM_STRING)
            return kiln_rt_fail(r->err, r->path, NULL,
                                "__metadata__ value for '%s' must be a string, got %s", all[c].key,
                                kind_name(&all[c]));
        r->meta_keys[r->n_meta] = all[c].key;
        r->meta_values[r->n_meta] = all[c].str;
        r->n_meta++;
    }
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts a copy of names to find a duplicate in O(n log n). Returns 1 and sets *dup
 * if there is one, 0 if not, -1 if out of memory. */
static int find_duplicate(const char *const *names, int n, const char **dup) {
    if (n < 2) return 0;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return -1;
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    int found = 0;
    for (int k = 1; k < n && !found; k++)
        if (strcmp(sorted[k - 1], sorted[k]) == 0) *dup = sorted[k], found = 1;
    free(sorted);
    return found;
}

static int cmp_entry_range(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Two tensors sharing bytes would alias after loading only by accident of layout;
 * such a file is corrupt or hostile. Empty ranges overlap nothing. */
static int check_overlaps(reader *r) {
    int n = r->n_entries;
    if (n < 2) return 0;
    const st_entry **by = malloc((size_t)n * sizeof *by);
    if (!by) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    for (int k = 0; k < n; k++) by[k] = &r->entries[k];
    qsort(by, (size_t)n, sizeof *by, cmp_entry_range);
    const st_entry *reach = NULL; /* the non-empty range ending furthest so far */
    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        const st_entry *e = by[k];
        if (e->begin == e->end) continue;
        if (reach && e->begin < reach->end)
            rc = kiln_rt_fail(r->err, r->path, NULL,
                              "tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", reach->name,
                              (unsigned long long)reach->begin, (unsigned long long)reach->end, e->name,
                              (unsigned long long)e->begin, (unsigned long long)e->end);
        if (!reach || e->end > reach->end) reach = e;
    }
    free(by);
    return rc;
}

static int read_exact(reader *r, void *buf, size_t n, const char *what) {
    if (n && fread(buf, 1, n, r->f) != n)
        return kiln_rt_fail(r->err, r->path, NULL, "%s while reading %s",
                            ferror(r->f) ? strerror(errno) : "file ended early", what);
    return 0;
}

/* " (it starts with text \"…\")" when the 8 bytes are printable, else "". */
static void looks_like(const unsigned char *b, char *out, size_t cap)
{
    out[0] = 0;
    for (int i = 0; i < 8; i++)
        if (b[i] < 0x09 || (b[i] > 0x0d && b[i] < 0x20) || b[i] > 0x7e) return;
    char text[9];
    for (int i = 0; i < 8; i++) text[i] = b[i] < 0x20 ? ' ' : (char)b[i];
    text[8] = 0;
    snprintf(out, cap, " (it starts with text \"%s\")", text);
}

/* Phase 1 and 2: size the file, read the header and parse it. */
static int read_header(reader *r) {
    /* kiln_open_regular, not fopen: opening a FIFO must not wait for a writer. */
    struct stat st;
    int fd = kiln_open_regular(r->path, &st);
    if (fd == -2) return kiln_rt_fail(r->err, r->path, NULL, "not a regular file");
    if (fd < 0) return kiln_rt_fail(r->err, r->path, NULL, "cannot open: %s", strerror(errno));
    r->f = fdopen(fd, "rb");
    if (!r->f) {
        int e = errno;
        close(fd);
        return kiln_rt_fail(r->err, r->path, NULL, "cannot open: %s", strerror(e));
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8)
        return kiln_rt_fail(r->err, r->path, NULL, "not a safetensors file: %llu bytes, too short for a header",
                            (unsigned long long)size);
    unsigned char len8[8];
    if (read_exact(r, len8, 8, "the header length")) return -1;
    uint64_t n = load64(len8);
    /* A header length that cannot be is what any other file gives (text, a pickle, a
     * zip): say what the file is not, and show how it starts, before the figures. */
    char start[40];
    looks_like(len8, start, sizeof start);
    if (n > ST_MAX_HEADER)
        return kiln_rt_fail(r->err, r->path, NULL,
                            "not a safetensors file%s: its first 8 bytes give header length %llu, which exceeds the limit of %llu",
                            start, (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > size - 8)
        return kiln_rt_fail(r->err, r->path, NULL,
                            "not a safetensors file%s: its first 8 bytes give header length %llu, larger than the rest "
                            "of the file (%llu bytes)",
                            start, (unsigned long long)n, (unsigned long long)(size - 8));
    r->data_start = 8 + n;
    r->data_size = size - 8 - n;
    r->header = malloc((size_t)n + 1);
    if (!r->header)
        return kiln_rt_fail(r->err, r->path, NULL, "out of memory for a %llu-byte header",
                            (unsigned long long)n);
    if (read_exact(r, r->header, (size_t)n, "the header")) return -1;
    r->header[n] = '\0';
    size_t lead = strspn(r->header, " \t\r\n");
    jm_error jerr;
    if (jm_parse(r->header, (size_t)n, 0, &r->doc, &jerr))
        return kiln_rt_fail(r->err, r->path, NULL, "%sheader is not valid JSON (at byte %zu): %s",
                            r->header[lead] != '{' ? "not a safetensors file: its " : "", jerr.at, jerr.msg);
    if (r->doc.v[0].kind != JM_OBJECT)
        return kiln_rt_fail(r->err, r->path, NULL, "header must be a JSON object, got %s",
                            kind_name(&r->doc.v[0]));
    return 0;
}

/* Phase 3: every entry, then duplicates and overlaps across entries. */
static int validate_entries(reader *r) {
    const jm_value *all = r->doc.v;
    int cap = 0;
    for (int32_t c = all[0].first; c >= 0; c = all[c].next) {
        if (strcmp(all[c].key, "__metadata__") == 0) {
            if (parse_metadata(r, &all[c])) return -1;
            continue;
        }
        /* Grown as entries pass validation (not sized by the member count up front),
         * so memory follows what the file proves, not what it claims. */
        if (r->n_entries == cap) {
            cap = cap ? 2 * cap : 16;
            st_entry *grown = realloc(r->entries, (size_t)cap * sizeof *grown);
            if (!grown) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
            r->entries = grown;
        }
        if (parse_entry(r, &all[c], &r->entries[r->n_entries])) return -1;
        r->n_entries++;
    }
    const char **names = malloc(((size_t)r->n_entries + 1) * sizeof *names);
    if (!names) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    for (int k = 0; k < r->n_entries; k++) names[k] = r->entries[k].name;
    const char *dup = NULL;
    int found = find_duplicate(names, r->n_entries, &dup);
    free(names);
    if (found < 0) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    if (found) return kiln_rt_fail(r->err, r->path, dup, "appears twice in the header");
    found = find_duplicate(r->meta_keys, r->n_meta, &dup);
    if (found < 0) return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    if (found) return kiln_rt_fail(r->err, r->path, NULL, "__metadata__ key '%s' appears twice", dup);
    return check_overlaps(r);
}

/* ---- reading: data ------------------------------------------------------------------- */

static int read_tensor(reader *r, const st_entry *e, kiln_tensor *t) {
    t->name = strdup(e->name);
    if (!t->name) return kiln_rt_fail(r->err, r->path, e->name, "out of memory");
    t->dtype = DTYPES[e->kind].to;
    t->rank = e->rank;
    memcpy(t->shape, e->shape, sizeof t->shape);
    if ((uint64_t)e->numel > SIZE_MAX / KILN_ELEM_BYTES)
        return kiln_rt_fail(r->err, r->path, e->name, "too large for this machine's address space");
    size_t out_bytes = (size_t)e->numel * KILN_ELEM_BYTES;
    t->data = kiln_aligned_alloc(out_bytes);
    if (!t->data) return kiln_rt_fail(r->err, r->path, e->name, "out of memory for %zu bytes", out_bytes);
    if (e->numel == 0) return 0;
    if (fseeko(r->f, (off_t)(r->data_start + e->begin), SEEK_SET) != 0)
        return kiln_rt_fail(r->err, r->path, e->name, "cannot seek: %s", strerror(errno));

    /* Same bytes as in memory: one fread straight into the tensor. */
    if (host_is_little() && (e->kind == ST_F32 || e->kind == ST_I32)) {
        if (fread(t->data, 1, out_bytes, r->f) != out_bytes)
            return kiln_rt_fail(r->err, r->path, e->name, "file ended early while reading the data");
        return 0;
    }
    /* Otherwise convert through the chunk buffer. */
    if (!r->chunk && !(r->chunk = malloc(ST_CHUNK)))
        return kiln_rt_fail(r->err, r->path, e->name, "out of memory");
    const int size = DTYPES[e->kind].size;
    const int64_t per_chunk = ST_CHUNK / size;
    for (int64_t done = 0; done < e->numel;) {
        int64_t n = e->numel - done < per_chunk ? e->numel - done : per_chunk;
        if (fread(r->chunk, (size_t)size, (size_t)n, r->f) != (size_t)n)
            return kiln_rt_fail(r->err, r->path, e->name, "file ended early while reading the data");
        int64_t bad = convert(e->kind, r->chunk, n, (char *)t->data + done * KILN_ELEM_BYTES);
        if (bad >= 0) {
            char what[96];
            describe_value(e->kind, r->chunk + bad * size, what, sizeof what);
            return kiln_rt_fail(r->err, r->path, e->name, "%s element %lld: %s", DTYPES[e->kind].name,
                                (long long)(done + bad), what);
        }
        done += n;
    }
    return 0;
}

/* Phase 4: copy names and metadata out of the header, read every tensor. */
static int load(reader *r, kiln_tensor_file *out) {
    out->tensors = calloc((size_t)r->n_entries + 1, sizeof *out->tensors);
    out->meta_keys = calloc((size_t)r->n_meta + 1, sizeof *out->meta_keys);
    out->meta_values = calloc((size_t)r->n_meta + 1, sizeof *out->meta_values);
    if (!out->tensors || !out->meta_keys || !out->meta_values)
        return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    for (int k = 0; k < r->n_meta; k++) {
        out->meta_keys[k] = strdup(r->meta_keys[k]);
        out->meta_values[k] = strdup(r->meta_values[k]);
        out->n_meta++; /* counted before the check so that free sees both strings */
        if (!out->meta_keys[k] || !out->meta_values[k])
            return kiln_rt_fail(r->err, r->path, NULL, "out of memory");
    }
    for (int k = 0; k < r->n_entries; k++) {
        out->n++;
        if (read_tensor(r, &r->entries[k], &out->tensors[k])) return -1;
    }
    return 0;
}

int kiln_tensor_file_read(const char *path, kiln_tensor_file *out, kiln_rt_error *err) {
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    err->msg[0] = '\0';
    if (!out) return kiln_rt_fail(err, path ? path : "(null)", NULL, "no output given");
    memset(out, 0, sizeof *out);
    if (!path || !path[0]) return kiln_rt_fail(err, "(no file name)", NULL, "empty file name");

    reader r = {.path = path, .err = err};
    int rc = read_header(&r);
    if (rc == 0) rc = validate_entries(&r);
    if (rc == 0) rc = load(&r, out);

    if (r.f) fclose(r.f);
    jm_free(&r.doc);
    free(r.header);
    free(r.entries);
    free(r.meta_keys);
    free(r.meta_values);
    free(r.chunk);
    if (rc) kiln_tensor_file_free(out);
    return rc;
}

const kiln_tensor *kiln_tensor_file_find(const kiln_tensor_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int k = 0; k < f->n; k++)
        if (f->tensors[k].name && strcmp(f->tensors[k].name, name) == 0) return &f->tensors[k];
    return NULL;
}

const char *kiln_tensor_file_meta(const kiln_tensor_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int k = 0; k < f->n_meta; k++)
        if (f->meta_keys[k] && strcmp(f->meta_keys[k], key) == 0) return f->meta_values[k];
    return NULL;
}

void kiln_tensor_file_free(kiln_tensor_file *f) {
    if (!f) return;
    for (int k = 0; k < f->n && f->tensors; k++) {
        free(f->tensors[k].name);
        kiln_aligned_free(f->tensors[k].data);
    }
    for (int k = 0; k < f->n_meta; k++) {
        if (f->meta_keys) free(f->meta_keys[k]);
        if (f->meta_values) free(f->meta_values[k]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    memset(f, 0, sizeof *f);
}

int64_t kiln_tensor_numel(const kiln_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) n *= t->shape[d];
    return n;
}

/* ---- writing ------------------------------------------------------------------------- */

/* A growable byte buffer; a failed allocation sets oom and later appends do nothing,
 * so the header is built without checking every call. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_int(strbuf *b, long long v) {
    char s[32];
    sb_put(b, s, (size_t)snprintf(s, sizeof s, "%lld", v));
}

/* A JSON string literal. The text is known to be valid UTF-8, which passes through;
 * quotes, backslashes and control characters are escaped. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        switch (*c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (*c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *c);
                sb_puts(b, esc);
            } else {
                sb_put(b, (const char *)c, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

static int valid_utf8(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = jm_utf8_len(u + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* Checks the arguments and builds the header into h, padded to 8 bytes (the data
 * section's offsets are in it). */
static int build_header(const char *path, const kiln_tensor *t, int n, const char *const *mk,
                        const char *const *mv, int n_meta, strbuf *h, kiln_rt_error *err) {
    if (n < 0 || n_meta < 0) return kiln_rt_fail(err, path, NULL, "negative tensor or metadata count");
    if (n > 0 && !t) return kiln_rt_fail(err, path, NULL, "no tensors given");
    if (n_meta > 0 && (!mk || !mv)) return kiln_rt_fail(err, path, NULL, "no metadata arrays given");
    for (int k = 0; k < n; k++) {
        const char *name = t[k].name;
        if (!name || !name[0]) return kiln_rt_fail(err, path, NULL, "tensor %d has an empty name", k);
        if (!valid_utf8(name))
            return kiln_rt_fail(err, path, NULL, "tensor %d's name is not valid UTF-8", k);
        if (strcmp(name, "__metadata__") == 0)
            return kiln_rt_fail(err, path, name, "this name is reserved");
        if (t[k].dtype != KILN_F32 && t[k].dtype != KILN_I32)
            return kiln_rt_fail(err, path, name, "dtype must be f32 or i32");
        if (t[k].rank < 0 || t[k].rank > KILN_MAX_RANK)
            return kiln_rt_fail(err, path, name, "rank %d is outside 0..%d", t[k].rank, KILN_MAX_RANK);
        int64_t numel = 1;
        for (int d = 0; d < t[k].rank; d++) {
            int64_t dim = t[k].shape[d];
            if (dim < 0)
                return kiln_rt_fail(err, path, name, "shape[%d] is negative (%lld)", d, (long long)dim);
            if (dim && numel > INT64_MAX / KILN_ELEM_BYTES / dim)
                return kiln_rt_fail(err, path, name, "shape has too many elements");
            numel *= dim;
        }
        if (numel > 0 && !t[k].data) return kiln_rt_fail(err, path, name, "data is NULL");
    }
    for (int k = 0; k < n_meta; k++) {
        if (!mk[k] || !mv[k]) return kiln_rt_fail(err, path, NULL, "metadata entry %d is NULL", k);
        if (!valid_utf8(mk[k]) || !valid_utf8(mv[k]))
            return kiln_rt_fail(err, path, NULL, "metadata entry '%s' is not valid UTF-8", mk[k]);
    }
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!names) return kiln_rt_fail(err, path, NULL, "out of memory");
    for (int k = 0; k < n; k++) names[k] = t[k].name;
    const char *dup = NULL;
    int found = find_duplicate(names, n, &dup);
    free(names);
    if (found < 0) return kiln_rt_fail(err, path, NULL, "out of memory");
    if (found) return kiln_rt_fail(err, path, dup, "name given twice");
    found = find_duplicate(mk, n_meta, &dup);
    if (found < 0) return kiln_rt_fail(err, path, NULL, "out of memory");
    if (found) return kiln_rt_fail(err, path, NULL, "metadata key '%s' given twice", dup);

    sb_puts(h, "{");
    if (n_meta > 0) {
        sb_puts(h, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) sb_puts(h, ",");
            sb_json_string(h, mk[k]);
            sb_puts(h, ":");
            sb_json_string(h, mv[k]);
        }
        sb_puts(h, "}");
    }
    int64_t offset = 0;
    for (int k = 0; k < n; k++) {
        if (k || n_meta > 0) sb_puts(h, ",");
        sb_json_string(h, t[k].name);
        sb_puts(h, t[k].dtype == KILN_I32 ? ":{\"dtype\":\"I32\",\"shape\":["
                                          : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[k].rank; d++) {
            if (d) sb_puts(h, ",");
            sb_int(h, t[k].shape[d]);
        }
        int64_t bytes = kiln_tensor_numel(&t[k]) * KILN_ELEM_BYTES;
        if (bytes > INT64_MAX - offset) return kiln_rt_fail(err, path, NULL, "tensors too large in total");
        sb_puts(h, "],\"data_offsets\":[");
        sb_int(h, offset);
        sb_puts(h, ",");
        sb_int(h, offset + bytes);
        sb_puts(h, "]}");
        offset += bytes;
    }
    sb_puts(h, "}");
    while (h->len % 8 != 0) sb_puts(h, " ");
    if (h->oom) return kiln_rt_fail(err, path, NULL, "out of memory building the header");
    if (h->len > ST_MAX_HEADER)
        return kiln_rt_fail(err, path, NULL, "header longer than %llu bytes", ST_MAX_HEADER);
    return 0;
}

/* The data section: bytes as they are on little-endian hosts, else stored
 * little-endian through a small buffer. */
static int write_data(kiln_atomic_file *f, const kiln_tensor *t, int n, kiln_rt_error *err) {
    for (int k = 0; k < n; k++) {
        int64_t numel = kiln_tensor_numel(&t[k]);
        if (numel == 0) continue;
        if (host_is_little()) {
            if (kiln_atomic_write(f, t[k].data, (size_t)numel * KILN_ELEM_BYTES, err)) return -1;
            continue;
        }
        unsigned char buf[4096];
        const uint32_t *words = t[k].data;
        for (int64_t j = 0; j < numel;) {
            size_t m = 0;
            for (; m < sizeof buf / 4 && j < numel; m++, j++) store32(buf + 4 * m, words[j]);
            if (kiln_atomic_write(f, buf, 4 * m, err)) return -1;
        }
    }
    return 0;
}

int kiln_tensor_file_write(const char *path, const kiln_tensor *tensors, int n,
                           const char *const *meta_keys, const char *const *meta_values, int n_meta,
                           kiln_rt_error *err) {
    kiln_rt_error ignored;
    if (!err) err = &ignored;
    err->msg[0] = '\0';
    if (!path || !path[0]) return kiln_rt_fail(err, "(no file name)", NULL, "empty file name");

    strbuf h = {0};
    if (build_header(path, tensors, n, meta_keys, meta_values, n_meta, &h, err)) {
        free(h.p);
        return -1;
    }

    /* atomic_file.c: a temporary beside the target, fsync'ed and renamed over it only
     * when everything was written; any failure leaves the previous file as it was */
    kiln_atomic_file f;
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.len >> 8 * k);
    int rc = kiln_atomic_begin(&f, path, err);
    if (!rc) rc = kiln_atomic_write(&f, len8, 8, err);
    if (!rc) rc = kiln_atomic_write(&f, h.p, h.len, err);
    if (!rc) rc = write_data(&f, tensors, n, err);
    if (!rc) rc = kiln_atomic_commit(&f, err);
    free(h.p);
    return rc ? -1 : 0;
}
