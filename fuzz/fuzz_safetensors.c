/* fuzz_safetensors.c — the safetensors readers: kiln_tensor_file_read (weights, inputs,
 * checkpoints) with the checkpoint metadata parsers (tokenizer, labels, data position),
 * and kiln_params_load, the streaming loader inside exported libraries.
 *
 * Properties: neither reader crashes; and the two agree — when the full reader accepts
 * a file, the exported loader, given a parameter table of that file's f32 tensors,
 * accepts it too and loads the same values (bit for bit; NaN as NaN).
 */
#include <math.h>
#include <string.h>

#include "data.h"
#include "fuzz.h"
#include "kiln/params.h"
#include "kiln/runtime.h"
#include "tokenizer.h"

/* The exported loader on a fixed table, for files the full reader refuses too. */
static void load_fixed(const char *path)
{
    static float blob[64] __attribute__((aligned(64)));
    const kiln_param_info table[] = {{"w", 0, 2, {2, 3}}, {"b", 64, 1, {3}}, {"x", 128, 0, {0}}};
    unsigned char seen[3];
    kiln_params_load(blob, path, table, 3, seen);
}

/* The full reader accepted f: the exported loader must load its f32 tensors identically. */
static void compare_loaders(const kiln_tensor_file *f, const char *path)
{
    kiln_param_info *table = calloc((size_t)f->n + 1, sizeof *table);
    size_t bytes = 0;
    int n = 0;
    for (int i = 0; i < f->n; i++) {
        const kiln_tensor *t = &f->tensors[i];
        if (t->dtype != KILN_F32 || strlen(t->name) > KILN_PARAMS_MAX_NAME) continue;
        table[n].name = t->name;
        table[n].offset = bytes;
        table[n].rank = t->rank;
        memcpy(table[n].shape, t->shape, sizeof table[n].shape);
        bytes += ((size_t)kiln_tensor_numel(t) * 4 + 63) / 64 * 64;
        n++;
    }
    if (bytes > (64u << 20)) {
        free(table);
        return;
    }
    float *blob = kiln_aligned_alloc(bytes);
    unsigned char *seen = malloc((size_t)n + 1);
    int rc = kiln_params_load(blob, path, table, n, seen);
    /* F16/BF16/F64 tensors and "I32" are the reader's conversions; the loader refuses
     * integer dtypes only when they are in its table, and they are not */
    if (rc != KILN_LOAD_OK) fprintf(stderr, "kiln_params_load: %d on a file the reader accepts\n", rc);
    FUZZ_CHECK(rc == KILN_LOAD_OK);
    for (int i = 0, k = 0; i < f->n; i++) {
        const kiln_tensor *t = &f->tensors[i];
        if (t->dtype != KILN_F32 || strlen(t->name) > KILN_PARAMS_MAX_NAME) continue;
        const float *a = t->data, *b = (const float *)((const char *)blob + table[k++].offset);
        for (int64_t j = 0; j < kiln_tensor_numel(t); j++)
            FUZZ_CHECK((isnan(a[j]) && isnan(b[j])) || memcmp(&a[j], &b[j], 4) == 0);
    }
    free(seen);
    kiln_aligned_free(blob);
    free(table);
}

/* What resuming and evaluating read from a checkpoint's metadata. */
static void parse_metadata(const kiln_tensor_file *f, const char *path)
{
    kiln_diags d;
    kiln_diags_init(&d);
    const char *text;
    if ((text = kiln_tensor_file_meta(f, "tokenizer"))) {
        kiln_tokenizer t;
        if (kiln_tokenizer_deserialize(&t, text, path, "__metadata__.tokenizer", &d)) kiln_tokenizer_free(&t);
    }
    if ((text = kiln_tensor_file_meta(f, "labels"))) {
        kiln_labels l;
        if (kiln_labels_deserialize(&l, text, path, "__metadata__.labels", &d)) kiln_labels_free(&l);
    }
    if ((text = kiln_tensor_file_meta(f, "data_state"))) {
        kiln_batch_state st;
        if (kiln_batch_state_parse(&st, text)) {
            char buf[512];
            kiln_batch_state_format(&st, buf, sizeof buf);
            kiln_batch_state again;
            FUZZ_CHECK(kiln_batch_state_parse(&again, buf));
        }
    }
    if ((text = kiln_tensor_file_meta(f, "task"))) {
        kiln_task task;
        kiln_task_parse(text, &task);
    }
    kiln_diags_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("fuzz.safetensors", data, size);
    kiln_tensor_file f;
    kiln_rt_error err;
    if (kiln_tensor_file_read(path, &f, &err) == 0) {
        FUZZ_CHECK(kiln_tensor_file_find(&f, "") == NULL || f.n > 0);
        compare_loaders(&f, path);
        parse_metadata(&f, path);
        kiln_tensor_file_free(&f);
    } else {
        FUZZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0); /* every message names the file */
    }
    load_fixed(path);
    return 0;
}
