/* params.c — kiln_params_load: a safetensors file into an exported model's parameter
 * blob, without allocating (see kiln/params.h for the contract).
 *
 * Design: the exported library cannot use the full reader (safetensors.c), which
 * allocates the header and one buffer per tensor. Instead the header is parsed as a
 * stream: bytes come through a fixed buffer on the stack (pread, so no FILE and no
 * heap), keys are decoded into a fixed name buffer, and each entry is handed to a
 * visitor as soon as its closing brace is read. The header is walked several times, each
 * walk asking one question, so that the answers come in the order kiln's own reader
 * gives them: (1) is it well formed, every range inside the data section, no parameter
 * named twice (`seen` marks them); (2, 3) does a parameter's byte range overlap any
 * other tensor's — a block of RANGES_AT_ONCE parameters' ranges on the stack per pair of
 * walks; (4) each parameter's dtype, shape and byte size, and its data read straight
 * into its slot in the blob (converted there, in place: read_tensor); then a missing
 * parameter. Any other tensor and "__metadata__" are skipped. Headers are small beside
 * the data they describe: walking one again costs a few reads and no memory.
 *
 * Stack: a program may load from any thread, small-stacked ones too, so the loader keeps
 * its frames small: under 3 KiB in all (tests/cli/test_export_abi.sh runs NAME_load on a
 * 16 KiB thread). The read buffer is 256 bytes, the largest piece is the block of ranges
 * (1 KiB); no buffer holds tensor data.
 *
 * The parser is strict where it matters for safety (every offset and size is checked
 * against the real file size before a byte is read; the skipper of unknown values is
 * iterative, so no nesting depth can exhaust the stack; the header is bounded by the
 * file) and lenient where it cannot hurt (the content of skipped values and of tensor
 * names is not validated as UTF-8; those names only ever get compared).
 */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/params.h"

/* ---- the byte stream ------------------------------------------------------------------ */

typedef struct reader {
    int fd;
    uint64_t pos, end;          /* file offsets: next byte to fetch, end of the header */
    unsigned char buf[256];     /* small: NAME_load may run on a thread with a 16 KiB stack */
    size_t i, n;                /* buf[i..n) not consumed yet */
    int status;                 /* first error (KILN_LOAD_*), 0 while all is well */
} reader;

static int fail(reader *r, int status)
{
    if (!r->status) r->status = status;
    return -1;
}

/* Reads exactly `size` bytes at `offset`; false on an error or a short file. */
static int pread_full(int fd, void *dst, size_t size, uint64_t offset)
{
    unsigned char *p = dst;
    while (size > 0) {
        ssize_t got = pread(fd, p, size, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return 0;
        p += got;
        size -= (size_t)got;
        offset += (uint64_t)got;
    }
    return 1;
}

/* The next header byte, or -1 at the header's end or after an error. */
static int get(reader *r)
{
    if (r->status) return -1;
    if (r->i == r->n) {
        if (r->pos >= r->end) return -1;
        uint64_t left = r->end - r->pos;
        size_t want = left < sizeof r->buf ? (size_t)left : sizeof r->buf;
        if (!pread_full(r->fd, r->buf, want, r->pos)) return fail(r, KILN_LOAD_IO);
        r->pos += want;
        r->i = 0;
        r->n = want;
    }
    return r->buf[r->i++];
}

static int peek(reader *r)
{
    int c = get(r);
    if (c >= 0) r->i--;
    return c;
}

static void skip_ws(reader *r)
{
    for (int c = peek(r); c == ' ' || c == '\t' || c == '\n' || c == '\r'; c = peek(r)) get(r);
}

/* Skips whitespace, then consumes `want` or fails. */
static int expect(reader *r, int want)
{
    skip_ws(r);
    return get(r) == want ? 0 : fail(r, KILN_LOAD_FORMAT);
}

/* ---- JSON pieces ---------------------------------------------------------------------- */

static int hex4(reader *r, unsigned *v)
{
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int c = get(r), d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(r, KILN_LOAD_FORMAT);
        *v = *v << 4 | (unsigned)d;
    }
    return 0;
}

/* Appends one byte to out (cap bytes, kept NUL-terminated); past the end only *len
 * grows, so the caller can tell the string did not fit. */
static void put(char *out, size_t cap, size_t *len, unsigned char c)
{
    if (out && *len + 1 < cap) out[*len] = (char)c;
    (*len)++;
}

/* The rest of a string whose opening quote was consumed, decoded into out (NULL to
 * skip). Returns the decoded length (which may exceed cap - 1: then out holds a prefix)
 * or -1. */
static long read_string(reader *r, char *out, size_t cap)
{
    size_t len = 0;
    for (;;) {
        int c = get(r);
        if (c < 0x20) return fail(r, KILN_LOAD_FORMAT); /* end of header, error, control char */
        if (c == '"') break;
        if (c != '\\') {
            put(out, cap, &len, (unsigned char)c);
            continue;
        }
        c = get(r);
        const char *simple = "\"\\/bfnrt", *meaning = "\"\\/\b\f\n\r\t";
        const char *at = c > 0 ? strchr(simple, c) : NULL;
        if (at && c != 'u') {
            put(out, cap, &len, (unsigned char)meaning[at - simple]);
            continue;
        }
        if (c != 'u') return fail(r, KILN_LOAD_FORMAT);
        unsigned cp, lo;
        if (hex4(r, &cp) < 0) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(r, KILN_LOAD_FORMAT); /* a lone low surrogate */
        if (cp >= 0xD800 && cp <= 0xDBFF) {                                  /* needs its low half */
            if (get(r) != '\\' || get(r) != 'u' || hex4(r, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                return fail(r, KILN_LOAD_FORMAT);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        /* UTF-8 */
        if (cp < 0x80) {
            put(out, cap, &len, (unsigned char)cp);
        } else if (cp < 0x800) {
            put(out, cap, &len, (unsigned char)(0xC0 | cp >> 6));
            put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            put(out, cap, &len, (unsigned char)(0xE0 | cp >> 12));
            put(out, cap, &len, (unsigned char)(0x80 | (cp >> 6 & 0x3F)));
            put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
        } else {
            put(out, cap, &len, (unsigned char)(0xF0 | cp >> 18));
            put(out, cap, &len, (unsigned char)(0x80 | (cp >> 12 & 0x3F)));
            put(out, cap, &len, (unsigned char)(0x80 | (cp >> 6 & 0x3F)));
            put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
        }
    }
    if (out && cap) out[len < cap ? len : cap - 1] = '\0';
    return (long)len;
}

/* A key: '"' string '"' ':' — decoded into out; returns its length or -1. */
static long read_key(reader *r, char *out, size_t cap)
{
    if (expect(r, '"') < 0) return -1;
    long len = read_string(r, out, cap);
    if (len < 0 || expect(r, ':') < 0) return -1;
    return len;
}

/* A non-negative integer (what shapes and offsets are). */
static int read_uint(reader *r, uint64_t *v)
{
    skip_ws(r);
    int c = peek(r), digits = 0;
    *v = 0;
    while (c >= '0' && c <= '9') {
        if (*v > (UINT64_MAX - 9) / 10) return fail(r, KILN_LOAD_FORMAT);
        *v = *v * 10 + (uint64_t)(c - '0');
        get(r);
        digits++;
        c = peek(r);
    }
    return digits ? 0 : fail(r, KILN_LOAD_FORMAT);
}

/* Skips any JSON value. Iterative — a count of open brackets, strings skipped whole —
 * so a hostile nesting depth costs nothing; the content is not validated beyond that. */
static int skip_value(reader *r)
{
    skip_ws(r);
    long depth = 0;
    do {
        int c = get(r);
        if (c < 0) return fail(r, KILN_LOAD_FORMAT);
        if (c == '"') {
            if (read_string(r, NULL, 0) < 0) return -1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0) return fail(r, KILN_LOAD_FORMAT);
        } else if (depth == 0) {
            /* a number or literal: up to the next delimiter */
            for (c = peek(r); c >= 0 && !strchr(",}] \t\r\n", c); c = peek(r)) get(r);
        }
    } while (depth > 0);
    return 0;
}

/* After an item of an object or array: ',' (more follow, returns 1) or `close` (0). */
static int next_item(reader *r, int close)
{
    skip_ws(r);
    int c = get(r);
    return c == ',' ? 1 : c == close ? 0 : fail(r, KILN_LOAD_FORMAT);
}

/* ---- tensors -------------------------------------------------------------------------- */

enum { DT_UNKNOWN, DT_F32, DT_F16, DT_BF16, DT_F64 };

typedef struct entry {
    int dtype, rank;            /* rank > 8: too many dims for any parameter */
    int64_t shape[8];
    uint64_t begin, end;        /* data_offsets */
    int have;                   /* bits: 1 dtype, 2 shape, 4 data_offsets */
} entry;

/* {"dtype": …, "shape": […], "data_offsets": [b, e]} in any order, other keys skipped. */
static int read_entry(reader *r, entry *e)
{
    memset(e, 0, sizeof *e);
    if (expect(r, '{') < 0) return -1;
    skip_ws(r);
    if (peek(r) == '}') return fail(r, KILN_LOAD_FORMAT);
    do {
        char key[16], text[8];
        if (read_key(r, key, sizeof key) < 0) return -1;
        if (strcmp(key, "dtype") == 0) {
            if (expect(r, '"') < 0 || read_string(r, text, sizeof text) < 0) return -1;
            e->dtype = strcmp(text, "F32") == 0 ? DT_F32 : strcmp(text, "F16") == 0 ? DT_F16
                     : strcmp(text, "BF16") == 0 ? DT_BF16 : strcmp(text, "F64") == 0 ? DT_F64 : DT_UNKNOWN;
            e->have |= 1;
        } else if (strcmp(key, "shape") == 0) {
            if (expect(r, '[') < 0) return -1;
            skip_ws(r);
            if (peek(r) == ']') get(r);
            else
                for (int more = 1; more > 0; more = next_item(r, ']')) {
                    uint64_t d;
                    if (read_uint(r, &d) < 0) return -1;
                    if (e->rank < 8) e->shape[e->rank] = d > INT64_MAX ? -1 : (int64_t)d;
                    if (e->rank < 9) e->rank++;
                }
            e->have |= 2;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (expect(r, '[') < 0 || read_uint(r, &e->begin) < 0 || expect(r, ',') < 0 ||
                read_uint(r, &e->end) < 0 || expect(r, ']') < 0)
                return -1;
            e->have |= 4;
        } else if (skip_value(r) < 0) {
            return -1;
        }
    } while (next_item(r, '}') > 0);
    if (r->status) return -1;
    return e->have == 7 && e->begin <= e->end ? 0 : fail(r, KILN_LOAD_FORMAT);
}

static uint16_t le16(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }
static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 0x1F, man = h & 0x3FF;
    if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | man << 13); /* inf, nan */
    if (exp != 0) return bits_to_float(sign | (exp + 112) << 23 | man << 13); /* rebias 15 → 127 */
    float f = (float)man * 0x1p-24f; /* zero or subnormal: exact in f32 */
    return sign ? -f : f;
}

static int host_is_little(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* One element of dtype at b as f32; false for an F64 value too big for f32. */
static int element_to_float(const unsigned char *b, int dtype, float *f)
{
    if (dtype == DT_F32) *f = bits_to_float(le32(b));
    else if (dtype == DT_F16) *f = half_to_float(le16(b));
    else if (dtype == DT_BF16) *f = bits_to_float((uint32_t)le16(b) << 16);
    else {
        uint64_t u = le32(b) | (uint64_t)le32(b + 4) << 32;
        double d;
        memcpy(&d, &u, 8);
        if (d == d && (d > FLT_MAX || d < -FLT_MAX) && d - d == 0) return 0; /* finite, too big */
        *f = (float)d;
    }
    return 1;
}

/* Reads `count` elements of dtype at file offset `at` into dst as f32, converting in
 * place: the file's bytes are read into dst's own count * 4 bytes and turned into floats
 * from the front, so no buffer is needed (this runs on the caller's stack, which may be a
 * small thread's). A 2-byte element j is read at byte 2·count + 2j of dst and written at
 * 4j, never past an element not yet read (4j + 4 <= 2·count + 2(j + 1)); a 4-byte element
 * is rewritten where it lies. 8-byte (F64) elements do not fit: they come in rounds, each
 * filling the rest of dst with as many as it holds (half of what is left) and writing
 * element j at 4j, below the next one read at 8(j + 1); the last one goes through 8
 * bytes on the stack. */
static int read_tensor(int fd, float *dst, int64_t count, int dtype, uint64_t at)
{
    unsigned char *bytes = (unsigned char *)dst;
    if (dtype == DT_F32 || dtype == DT_F16 || dtype == DT_BF16) {
        int size = dtype == DT_F32 ? 4 : 2;
        unsigned char *src = bytes + (size_t)count * (size_t)(4 - size);
        if (!pread_full(fd, src, (size_t)count * (size_t)size, at)) return KILN_LOAD_IO;
        if (dtype == DT_F32 && host_is_little()) return KILN_LOAD_OK;
        for (int64_t j = 0; j < count; j++) {
            unsigned char b[4];
            memcpy(b, src + j * size, (size_t)size); /* before dst[j] may cover it */
            element_to_float(b, dtype, &dst[j]);
        }
        return KILN_LOAD_OK;
    }
    for (int64_t done = 0; done < count;) {
        int64_t k = (count - done) / 2;
        unsigned char last[8], *src = k ? bytes + done * 4 : last;
        if (k == 0) k = 1;
        if (!pread_full(fd, src, (size_t)k * 8, at + (uint64_t)done * 8)) return KILN_LOAD_IO;
        for (int64_t j = 0; j < k; j++) {
            unsigned char b[8];
            memcpy(b, src + j * 8, 8);
            if (!element_to_float(b, dtype, &dst[done + j])) return KILN_LOAD_DTYPE;
        }
        done += k;
    }
    return KILN_LOAD_OK;
}

/* Checks entry e against parameter p and reads it into the blob. */
static int load_one(int fd, void *blob, const kiln_param_info *p, const entry *e, uint64_t data_start,
                    uint64_t data_size)
{
    if (e->dtype == DT_UNKNOWN) return KILN_LOAD_DTYPE;
    if (e->rank != p->rank) return KILN_LOAD_SHAPE;
    int64_t count = 1;
    for (int d = 0; d < p->rank; d++) {
        if (e->shape[d] != p->shape[d]) return KILN_LOAD_SHAPE;
        count *= p->shape[d];
    }
    int size = e->dtype == DT_F32 ? 4 : e->dtype == DT_F64 ? 8 : 2;
    if (e->end > data_size || e->end - e->begin != (uint64_t)count * (uint64_t)size) return KILN_LOAD_FORMAT;
    return read_tensor(fd, (float *)((char *)blob + p->offset), count, e->dtype, data_start + e->begin);
}

/* ---- the file ------------------------------------------------------------------------- */

/* What every walk over the header knows. */
typedef struct file {
    int fd;
    uint64_t header_end, data_start, data_size;
    const kiln_param_info *params;
    int n;
} file;

/* Called for every tensor entry, in the header's order, with the index of the parameter
 * it names or -1; a non-zero return (a KILN_LOAD_* code) ends the walk. */
typedef int (*visit_fn)(void *ctx, const file *f, int param, const entry *e);

/* One walk over the header, from its first byte: the whole header is parsed every time
 * (it is small beside the data, and re-reading it costs no memory). */
static int walk(const file *f, visit_fn visit, void *ctx)
{
    reader r;
    r.fd = f->fd;
    r.pos = 8;
    r.end = f->header_end;
    r.i = r.n = 0;
    r.status = 0;
    if (expect(&r, '{') < 0) return r.status;
    skip_ws(&r);
    int more = peek(&r) == '}' ? (get(&r), 0) : 1;
    for (; more > 0; more = next_item(&r, '}')) {
        char name[KILN_PARAMS_MAX_NAME];
        long len = read_key(&r, name, sizeof name);
        if (len < 0) return r.status;
        int fits = (size_t)len < sizeof name;
        if (fits && strcmp(name, "__metadata__") == 0) {
            if (skip_value(&r) < 0) return r.status;
            continue;
        }
        entry e;
        if (read_entry(&r, &e) < 0) return r.status;
        int param = -1;
        for (int i = 0; fits && i < f->n && param < 0; i++)
            if (strcmp(f->params[i].name, name) == 0) param = i;
        int rc = visit(ctx, f, param, &e);
        if (rc) return rc;
    }
    if (r.status) return r.status;
    skip_ws(&r); /* the header may be padded with spaces */
    if (get(&r) >= 0 || r.status) return r.status ? r.status : KILN_LOAD_FORMAT;
    return KILN_LOAD_OK;
}

/* Walk 1: the header is well formed, every range lies in the data section, and no
 * parameter is named twice (`seen` marks them). */
static int visit_check(void *ctx, const file *f, int param, const entry *e)
{
    unsigned char *seen = ctx;
    if (e->end > f->data_size) return KILN_LOAD_FORMAT;
    if (param < 0) return KILN_LOAD_OK;
    if (seen[param]) return KILN_LOAD_FORMAT; /* the same name twice */
    seen[param] = 1;
    return KILN_LOAD_OK;
}

/* Walks 2 and 3, for parameters [first, first + RANGES_AT_ONCE): their byte ranges are
 * collected, then every entry's range is compared with them. Two tensors sharing bytes
 * are a corrupt or hostile file, refused as kiln's own reader refuses them
 * (safetensors.c); the reader sorts all ranges, which takes memory in proportion to the
 * file, so here only overlaps involving a parameter are looked for, a block of
 * parameters per pair of walks: the cost grows with the file times the model's
 * parameter count, never with the square of what a file claims. Empty ranges overlap
 * nothing; a parameter the file lacks has an empty one. */
enum { RANGES_AT_ONCE = 64 };

typedef struct ranges {
    int first, count;
    uint64_t begin[RANGES_AT_ONCE], end[RANGES_AT_ONCE];
} ranges;

static int visit_collect(void *ctx, const file *f, int param, const entry *e)
{
    ranges *g = ctx;
    (void)f;
    if (param >= g->first && param < g->first + g->count) {
        g->begin[param - g->first] = e->begin;
        g->end[param - g->first] = e->end;
    }
    return KILN_LOAD_OK;
}

static int visit_overlap(void *ctx, const file *f, int param, const entry *e)
{
    const ranges *g = ctx;
    (void)f;
    if (e->begin == e->end) return KILN_LOAD_OK;
    for (int k = 0; k < g->count; k++)
        if (g->first + k != param && e->begin < g->end[k] && g->begin[k] < e->end) return KILN_LOAD_FORMAT;
    return KILN_LOAD_OK;
}

/* Walk 4: each parameter is checked against its entry and read into the blob. */
static int visit_load(void *ctx, const file *f, int param, const entry *e)
{
    if (param < 0) return KILN_LOAD_OK;
    return load_one(f->fd, ctx, &f->params[param], e, f->data_start, f->data_size);
}

/* The file's problems come in kiln's reader's order: a malformed header, a name twice
 * or an overlap (FORMAT) before any parameter's shape or dtype, then a missing one. */
static int load_file(const file *f, void *blob, unsigned char *seen)
{
    if (f->n > 0) memset(seen, 0, (size_t)f->n);
    int rc = walk(f, visit_check, seen);
    for (int first = 0; !rc && first < f->n; first += RANGES_AT_ONCE) {
        ranges g;
        g.first = first;
        g.count = f->n - first < RANGES_AT_ONCE ? f->n - first : RANGES_AT_ONCE;
        memset(g.begin, 0, sizeof g.begin);
        memset(g.end, 0, sizeof g.end);
        rc = walk(f, visit_collect, &g);
        if (!rc) rc = walk(f, visit_overlap, &g);
    }
    if (!rc) rc = walk(f, visit_load, blob);
    for (int i = 0; !rc && i < f->n; i++)
        if (!seen[i]) rc = KILN_LOAD_MISSING;
    return rc;
}

int kiln_params_load(void *blob, const char *path, const kiln_param_info *params, int n, unsigned char *seen)
{
    if (!blob || !path || (n > 0 && (!params || !seen)) || n < 0) return KILN_LOAD_IO;
    /* O_NONBLOCK so that a FIFO without a writer is refused below instead of blocking
     * the caller in open(); reads of a regular file then go back to blocking. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return KILN_LOAD_IO;
    struct stat st;
    unsigned char len8[8];
    int rc = KILN_LOAD_OK;
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || flags < 0) rc = KILN_LOAD_IO;
    else if (fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) rc = KILN_LOAD_IO;
    else if (st.st_size < 8 || !pread_full(fd, len8, 8, 0)) rc = KILN_LOAD_FORMAT;
    if (rc == KILN_LOAD_OK) {
        uint64_t size = (uint64_t)st.st_size, header = le32(len8) | (uint64_t)le32(len8 + 4) << 32;
        if (header > size - 8) {
            rc = KILN_LOAD_FORMAT;
        } else {
            file f = {fd, 8 + header, 8 + header, size - 8 - header, params, n};
            rc = load_file(&f, blob, seen);
        }
    }
    close(fd);
    return rc;
}
